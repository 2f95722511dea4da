package main

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestQuickRuns runs quick mode on the in-process backend with tiny
// durations and checks that every figure line is well-formed. It checks
// that the benchmark still runs, not its numbers.
func TestQuickRuns(t *testing.T) {
	var out bytes.Buffer
	o := Options{
		Quick:      true,
		Backends:   []string{GoChannel},
		Timing:     Timing{Warmup: 20 * time.Millisecond, Window: 50 * time.Millisecond, MinSamples: 1},
		AllocCalls: 50,
		Rounds:     2,
	}
	if err := Run(context.Background(), o, &out); err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	t.Log("\n" + out.String())

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if !strings.Contains(lines[1], "cores: "+strconv.Itoa(runtime.NumCPU())) || !strings.Contains(lines[1], runtime.Version()) {
		t.Errorf("second line should name the core count and Go version: %q", lines[1])
	}
	figure := regexp.MustCompile(`^(\S+) +(\S+) +(\S+) +(\S+) +(\S+)$`)
	units := []string{"ms", "calls/s", "events/s", "msg/s", "allocs/op", "B/op", "MiB"}
	var got []string
	for _, l := range lines {
		if strings.HasPrefix(l, "#") {
			continue
		}
		m := figure.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("malformed figure line %q", l)
			continue
		}
		got = append(got, m[1])
		for _, v := range m[2:5] {
			if f, err := strconv.ParseFloat(v, 64); err != nil || f < 0 {
				t.Errorf("%s: %q is not a non-negative number", m[1], v)
			}
		}
		if !slices.Contains(units, m[5]) {
			t.Errorf("%s: unknown unit %q", m[1], m[5])
		}
	}
	want := []string{
		"gochannel/cmd-1hop-c1-p50", "gochannel/cmd-1hop-c1-p99", "gochannel/cmd-1hop-c64",
		"gochannel/event-fanout", "gochannel/cmd-1hop-mem-allocs", "gochannel/cmd-1hop-mem-bytes",
	}
	if !slices.Equal(got, want) {
		t.Errorf("figures:\n got %q\nwant %q", got, want)
	}
}

func TestPayloadIs256Bytes(t *testing.T) {
	for _, seq := range []int64{0, 1, 1 << 62} {
		b, err := json.Marshal(newItem(seq))
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != PayloadSize {
			t.Errorf("item %d: %d bytes, want %d", seq, len(b), PayloadSize)
		}
	}
}

func TestRatioMeansSwitchboardIsBetter(t *testing.T) {
	for _, c := range []struct {
		sb, raw float64
		unit    string
		want    float64
	}{
		{200, 100, "calls/s", 2},
		{1, 2, "ms", 2},
		{50, 100, "allocs/op", 2},
		{100, 200, "events/s", 0.5},
	} {
		if got := ratio(c.sb, c.raw, c.unit); got != c.want {
			t.Errorf("ratio(%v, %v, %s) = %v, want %v", c.sb, c.raw, c.unit, got, c.want)
		}
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	if p := percentile(d, 50); p != 50 {
		t.Errorf("p50 = %d", p)
	}
	if p := percentile(d, 99); p != 99 {
		t.Errorf("p99 = %d", p)
	}
	if p := percentile(d[:1], 99); p != 1 {
		t.Errorf("p99 of one = %d", p)
	}
}
