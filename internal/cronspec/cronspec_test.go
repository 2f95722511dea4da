package cronspec

import (
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	base := time.Date(2026, 3, 28, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		spec string
		want time.Time
	}{
		{"0 3 * * *", time.Date(2026, 3, 29, 3, 0, 0, 0, time.UTC)},
		{"*/5 * * * * *", base.Add(5 * time.Second)},
		{"CRON_TZ=Europe/Paris 0 3 * * *", time.Date(2026, 3, 29, 1, 0, 0, 0, time.UTC)}, // 03:00 CEST, the day the clocks go forward
		{"@hourly", base.Add(time.Hour)},
	} {
		s, err := Parse(c.spec)
		if err != nil {
			t.Fatalf("%s: %v", c.spec, err)
		}
		if got := s.Next(base); !got.Equal(c.want) {
			t.Errorf("%s: next after %s = %s, want %s", c.spec, base, got.UTC(), c.want)
		}
	}
	for _, bad := range []string{"", "61 * * * *", "* * *", "CRON_TZ=Nowhere/City 0 3 * * *", "0 3 * * * * *"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) = nil error", bad)
		}
	}
}
