package bridge_test

import (
	"strings"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bridge"
)

// A spec must ask for at least one message in flight: nothing turns a
// smaller Concurrency into 1 behind the caller's back any more.
func TestSpecValidate(t *testing.T) {
	ok := bridge.Spec{Topic: "t", Group: "g", Kind: bridge.Command, Concurrency: 1}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid spec: %v", err)
	}
	for _, n := range []int{0, -1} {
		s := ok
		s.Concurrency = n
		if err := s.Validate(); err == nil || !strings.Contains(err.Error(), "Concurrency") {
			t.Errorf("Concurrency %d: %v, want it refused", n, err)
		}
	}
	err := bridge.Spec{}.Validate()
	for _, want := range []string{"empty topic", "empty group", "unknown kind", "Concurrency is 0"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate of the zero spec does not report %q: %v", want, err)
		}
	}
}

// A nack waits what the message asks for, or the one default of every
// backend.
func TestNackDelay(t *testing.T) {
	for _, c := range []struct {
		asked string // "": no NackDelayKey
		want  time.Duration
	}{
		{"", bridge.DefaultNackDelay},
		{"250ms", 250 * time.Millisecond},
		{"0s", 0},
		{"soon", bridge.DefaultNackDelay},
		{"-1s", bridge.DefaultNackDelay},
	} {
		md := map[string]string{}
		if c.asked != "" {
			md[bridge.NackDelayKey] = c.asked
		}
		if got := bridge.NackDelay(md); got != c.want {
			t.Errorf("NackDelay with %q = %s, want %s", c.asked, got, c.want)
		}
	}
	if bridge.DefaultNackDelay != time.Second {
		t.Errorf("DefaultNackDelay = %s; its doc comment says why it is 1 s", bridge.DefaultNackDelay)
	}
}
