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
	got := figureNames(t, lines)
	want := []string{
		"gochannel/cmd-1hop-c1-p50", "gochannel/cmd-1hop-c1-p99", "gochannel/cmd-1hop-c64",
		"gochannel/event-fanout", "gochannel/event-1pub", "gochannel/cmd-1hop-mem-allocs", "gochannel/cmd-1hop-mem-bytes",
	}
	if !slices.Equal(got, want) {
		t.Errorf("figures:\n got %q\nwant %q", got, want)
	}
}

// The shapes of a figure line: a ceiling (client alone, one value), a
// comparison, and a comparison with each side's fraction of a ceiling.
var (
	ceilingLine  = regexp.MustCompile(`^(\S+/ceiling-\S+) +(\S+) +(\S+)$`)
	figureLine   = regexp.MustCompile(`^(\S+) +(\S+) +(\S+) +(\S+) +(\S+)(?: +(\S+)/(\S+))?$`)
	figureUnits  = []string{"ms", "calls/s", "events/s", "msg/s", "rows/s", "allocs/op", "B/op", "MiB"}
	nonNegNumber = func(v string) bool { f, err := strconv.ParseFloat(v, 64); return err == nil && f >= 0 }
)

// figureNames checks every line that is not a comment against the figure
// line shapes and returns the figures' names.
func figureNames(t *testing.T, lines []string) []string {
	t.Helper()
	var got []string
	for _, l := range lines {
		if strings.HasPrefix(l, "#") {
			continue
		}
		var name, unit string
		var values []string
		if m := ceilingLine.FindStringSubmatch(l); m != nil {
			name, values, unit = m[1], m[2:3], m[3]
		} else if m := figureLine.FindStringSubmatch(l); m != nil {
			name, values, unit = m[1], m[2:5], m[5]
			if m[6] != "" {
				values = append(values, m[6], m[7])
			}
		} else {
			t.Errorf("malformed figure line %q", l)
			continue
		}
		got = append(got, name)
		for _, v := range values {
			if v != "-" && !nonNegNumber(v) {
				t.Errorf("%s: %q is not a non-negative number", name, v)
			}
		}
		if !slices.Contains(figureUnits, unit) {
			t.Errorf("%s: unknown unit %q", name, unit)
		}
	}
	return got
}

// TestFigureLineShapes writes a ceiling, a burst figure, a figure with its
// fraction of the ceiling and a tuned variant, as a broker backend's run
// does, and checks the lines.
func TestFigureLineShapes(t *testing.T) {
	var out bytes.Buffer
	ceil := metric{"", 20000, "msg/s", 60000, 0}
	writeCeiling(&out, "nats/ceiling-e2e", ceil)
	sb, raw, tuned := []metric{{"", 2000, "msg/s", 6000, 0}}, []metric{{"", 1000, "msg/s", 3000, 0}}, []metric{{"", 4000, "msg/s", 12000, 0}}
	writeFigures(&out, "nats/event-1pub", sb, raw, ceil.value)
	writeFigures(&out, "nats/event-1pub@tuned", sb, tuned, ceil.value)
	writeFigures(&out, "nats/event-1pub@tuned-confirm", nil, tuned, ceil.value)
	burst := func(p50, rate float64) []metric {
		return []metric{{"p50", p50, "ms", 500, 0}, {"p99", 2 * p50, "ms", 500, 0}, {"", rate, "rows/s", 500, 0}}
	}
	writeFigures(&out, "nats/outbox-burst", burst(2, 900), burst(8, 300), 0)
	t.Log("\n" + out.String())
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	got := figureNames(t, lines)
	want := []string{"nats/ceiling-e2e", "nats/event-1pub", "nats/event-1pub@tuned", "nats/event-1pub@tuned-confirm",
		"nats/outbox-burst-p50", "nats/outbox-burst-p99", "nats/outbox-burst"}
	if !slices.Equal(got, want) {
		t.Errorf("figures:\n got %q\nwant %q", got, want)
	}
	for i, tail := range []string{"msg/s", "msg/s 0.100/0.050", "msg/s 0.100/0.200", "msg/s -/0.200", "ms", "ms", "rows/s"} {
		f := strings.Fields(lines[i])
		if i == 0 {
			f = f[2:] // after name, value
		} else {
			f = f[4:] // after name, switchboard, raw, ratio
		}
		if got := strings.Join(f, " "); got != tail {
			t.Errorf("line %q should end with %q", lines[i], tail)
		}
	}
	if !strings.Contains(lines[2], " 0.50 ") {
		t.Errorf("tuned line's ratio should compare Switchboard with the tuned variant (0.50): %q", lines[2])
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
