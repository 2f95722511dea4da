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

// A daily tick at a time the clocks skip or repeat (02:30 in Paris) fires
// once that day: on the day the clocks go forward it is not skipped (it
// fires at 03:30 CEST, an hour late, as the wall time 02:30 read in
// winter time), and on the day they go back it does not fire twice. An
// hourly spec keeps firing every real hour across both changes.
func TestParseDST(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	ticks := func(spec string, from time.Time, n int) []time.Time {
		s, err := Parse(spec)
		if err != nil {
			t.Fatal(err)
		}
		var out []time.Time
		for t := from; len(out) < n; {
			t = s.Next(t)
			out = append(out, t.In(paris))
		}
		return out
	}
	for _, c := range []struct {
		name string
		from time.Time
		want []time.Time
	}{
		{"forward", time.Date(2026, 3, 28, 12, 0, 0, 0, paris), []time.Time{
			time.Date(2026, 3, 29, 3, 30, 0, 0, paris),
			time.Date(2026, 3, 30, 2, 30, 0, 0, paris),
		}},
		{"back", time.Date(2026, 10, 24, 12, 0, 0, 0, paris), []time.Time{
			time.Date(2026, 10, 25, 0, 30, 0, 0, time.UTC), // 02:30 CEST
			time.Date(2026, 10, 26, 2, 30, 0, 0, paris),
		}},
	} {
		got := ticks("CRON_TZ=Europe/Paris 30 2 * * *", c.from, len(c.want))
		for i := range c.want {
			if !got[i].Equal(c.want[i]) {
				t.Errorf("%s: tick %d = %s, want %s", c.name, i, got[i], c.want[i].In(paris))
			}
		}
	}
	for _, from := range []time.Time{time.Date(2026, 3, 29, 0, 0, 0, 0, paris), time.Date(2026, 10, 25, 0, 0, 0, 0, paris)} {
		got := ticks("CRON_TZ=Europe/Paris 0 * * * *", from, 5)
		for i := 1; i < len(got); i++ {
			if d := got[i].Sub(got[i-1]); d != time.Hour {
				t.Errorf("hourly from %s: ticks %s and %s are %s apart, want 1h", from, got[i-1], got[i], d)
			}
		}
	}
}
