package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"
)

// Options configures a run.
type Options struct {
	// Quick runs fewer, shorter figures: a smoke check.
	Quick bool
	// Backends to measure, in order; unreachable ones are reported and skipped.
	Backends []string
	// Workloads restricts the run to these workloads (default: all of the mode).
	Workloads []string
	// Side is "both" (default), "sb" or "raw"; one side prints "-" for the other.
	Side string
	// Timing of each figure; zero fields take the mode's defaults.
	Timing Timing
	// AllocCalls is how many calls the allocation figures average over.
	AllocCalls int
	// Rounds: each side is measured in this many rounds, alternating with
	// the other side (value figures: one round).
	Rounds int
	// RSSWindow is how long the RSS child processes run the c64 load; 0
	// skips the RSS figure (the unit test does).
	RSSWindow time.Duration
	// Progress receives a line per workload as it starts (nil: none).
	Progress io.Writer
}

// Concurrency of the workloads.
const (
	// HighConcurrency is the callers of the c64 figures.
	HighConcurrency = 64
	// Publishers publish concurrently in the event and publish figures.
	Publishers = 8
	// InFlight bounds the events published but not yet handled by both
	// subscribing services in the fan-out figure.
	InFlight = 1000
	// OutboxPause bounds the random idle time before each outbox
	// transaction: watermill-sql's default poll interval.
	OutboxPause = time.Second
	// OutboxMinSamples is the least number of transactions the outbox
	// figure measures in full mode.
	OutboxMinSamples = 12
	// OutboxWriters commit back to back in the outbox-burst figure.
	OutboxWriters = 8
	// OutboxBurstMinRows is the least number of rows the outbox-burst
	// figure measures in full mode: a relay that polls every second
	// delivers nothing in a short round.
	OutboxBurstMinRows = 500
	// CeilingBatch is the most messages the client-only ceilings put in
	// one INSERT, claim or DELETE (PostgreSQL).
	CeilingBatch = 100
)

// Defaults returns o with the mode's defaults in its zero fields.
func (o Options) Defaults() Options {
	if len(o.Backends) == 0 {
		o.Backends = AllBackends
	}
	if o.Side == "" {
		o.Side = "both"
	}
	d := Timing{Warmup: time.Second, Window: 3 * time.Second, MinSamples: 5, MaxWindow: 15 * time.Second}
	allocCalls := 20000
	if o.Quick {
		d = Timing{Warmup: 200 * time.Millisecond, Window: 500 * time.Millisecond, MinSamples: 2, MaxWindow: 5 * time.Second}
		allocCalls = 2000
	}
	if o.Timing.Warmup == 0 {
		o.Timing.Warmup = d.Warmup
	}
	if o.Timing.Window == 0 {
		o.Timing.Window = d.Window
	}
	if o.Timing.MinSamples == 0 {
		o.Timing.MinSamples = d.MinSamples
	}
	if o.Timing.MaxWindow == 0 {
		o.Timing.MaxWindow = max(d.MaxWindow, o.Timing.Window)
	}
	if o.AllocCalls == 0 {
		o.AllocCalls = allocCalls
	}
	if o.Rounds == 0 {
		o.Rounds = 2
		if o.Quick {
			o.Rounds = 1
		}
	}
	return o
}

// metric is one measured value of one side.
type metric struct {
	name  string // suffix of the figure: "p50", "" …
	value float64
	unit  string
	n     int64 // operations it is based on (0: not applicable)
	// timeouts is how many operations did not complete within OpTimeout.
	timeouts int64
}

// env is what a workload's trial is opened with.
type env struct {
	ctx     context.Context
	side    side
	sideID  string // "sb", "raw", a tuned variant's name or "client"
	ns      string
	backend *backend
	opts    Options
}

// sample is what one round of one side measured.
type sample struct {
	lat    []time.Duration // latency workloads
	ops    int64           // rate workloads: operations completed in the window
	el     time.Duration   // and the window's length
	values []float64       // value workloads
	n      int64           // value workloads: operations they are based on
	// timeouts counts the operations of rate workloads that timed out
	// (latency workloads record them as never).
	timeouts int64
}

// trial is one side's running topology for one workload: it is measured in
// rounds that alternate with the other side's, then closed.
type trial struct {
	round func(ctx context.Context, t Timing) (sample, error)
	close func() error
}

type kind int

const (
	latencyKind kind = iota // p50 and p99 of the pooled latencies, ms
	rateKind                // operations per second over all windows
	valueKind               // one round, values as measured
	burstKind               // latencyKind's p50 and p99, then rateKind's rate
)

// workload is one measured scenario; each produces one or more figures.
type workload struct {
	name   string
	quick  bool   // part of quick mode
	only   string // the only backend it runs on ("": every backend)
	kind   kind
	unit   string   // rateKind, burstKind
	values []string // valueKind: name/unit pairs
	// client: a client-only ceiling (no Switchboard, no Watermill),
	// measured once; its open gets no side.
	client bool
	// tuned: raw Watermill's tuned variants of the backend are measured
	// too, each on a figure line of its own (<figure>@<variant>).
	tuned bool
	// ceiling names the client workload whose figure this one is a
	// fraction of ("": none).
	ceiling string
	open    func(env) (*trial, error)
}

// Ceiling workloads: they run first on each backend, so that the figures
// after them can show their fraction.
const (
	ceilingE2E    = "ceiling-e2e"
	ceilingReqRep = "ceiling-reqrep-c64"
)

var workloads = []workload{
	{name: ceilingE2E, client: true, kind: rateKind, unit: "msg/s", open: ceilingTrial(ceilingE2E)},
	{name: ceilingReqRep, client: true, only: NATS, kind: rateKind, unit: "calls/s", open: ceilingTrial(ceilingReqRep)},
	{name: "cmd-1hop-c1", quick: true, kind: latencyKind, open: latencyTrial(1)},
	{name: "cmd-1hop-c64", quick: true, kind: rateKind, unit: "calls/s", ceiling: ceilingReqRep, open: rateTrial(1)},
	{name: "cmd-2hop-c1", kind: latencyKind, open: latencyTrial(2)},
	{name: "cmd-2hop-c64", kind: rateKind, unit: "calls/s", open: rateTrial(2)},
	{name: "event-fanout", quick: true, kind: rateKind, unit: "events/s", tuned: true, ceiling: ceilingE2E, open: fanoutTrial(2, Publishers)},
	{name: "event-1pub", quick: true, kind: rateKind, unit: "msg/s", tuned: true, ceiling: ceilingE2E, open: fanoutTrial(1, 1)},
	{name: "publish", kind: rateKind, unit: "msg/s", tuned: true, open: publishTrial},
	{name: "outbox-c1", quick: true, only: Postgres, kind: latencyKind, open: outboxTrial},
	{name: "outbox-burst", kind: burstKind, unit: "rows/s", open: outboxBurstTrial},
	{name: "schedule-c1", quick: true, only: Postgres, kind: latencyKind, open: scheduleTrial},
	{name: "schedule-burst", only: Postgres, kind: burstKind, unit: "msg/s", open: scheduleBurstTrial},
	{name: "cmd-1hop-mem", quick: true, only: GoChannel, kind: valueKind, values: []string{"allocs", "allocs/op", "bytes", "B/op"}, open: allocTrial},
	{name: "cmd-2hop-c64-rss", quick: true, only: GoChannel, kind: valueKind, values: []string{"", "MiB"}, open: rssTrial},
}

// WorkloadNames lists every workload, in the order a run measures them.
func WorkloadNames() []string {
	var out []string
	for _, w := range workloads {
		out = append(out, w.name)
	}
	return out
}

// metrics turns one side's samples into its figures.
func (w workload) metrics(ss []sample) []metric {
	switch w.kind {
	case burstKind:
		lw, rw := w, w
		lw.kind, rw.kind = latencyKind, rateKind
		return append(lw.metrics(ss), rw.metrics(ss)...)
	case latencyKind:
		var lat []time.Duration
		for _, s := range ss {
			lat = append(lat, s.lat...)
		}
		slices.Sort(lat)
		n := int64(len(lat))
		to := int64(len(lat) - sort.Search(len(lat), func(i int) bool { return lat[i] == never }))
		return []metric{{"p50", ms(percentile(lat, 50)), "ms", n, to}, {"p99", ms(percentile(lat, 99)), "ms", n, to}}
	case rateKind:
		var ops, to int64
		var el time.Duration
		for _, s := range ss {
			ops, el, to = ops+s.ops, el+s.el, to+s.timeouts
		}
		return []metric{{"", float64(ops) / el.Seconds(), w.unit, ops, to}}
	default:
		var out []metric
		for i := 0; i+1 < len(w.values); i += 2 {
			out = append(out, metric{w.values[i], ss[0].values[i/2], w.values[i+1], ss[0].n, 0})
		}
		return out
	}
}

// ms converts d to milliseconds; never is +Inf.
func ms(d time.Duration) float64 {
	if d == never {
		return math.Inf(1)
	}
	return float64(d) / float64(time.Millisecond)
}

func latencyTrial(hops int) func(env) (*trial, error) {
	return func(e env) (*trial, error) {
		r, err := e.side.commands(e.ctx, e.ns, hops)
		if err != nil {
			return nil, err
		}
		op := r.timedOp()
		return &trial{
			round: func(ctx context.Context, t Timing) (sample, error) {
				lat, err := latencies(ctx, t, op)
				return sample{lat: lat}, err
			},
			close: r.close,
		}, nil
	}
}

func outboxTrial(e env) (*trial, error) {
	w := make(waiter, 1)
	r, err := e.side.outbox(e.ctx, e.ns, true, w.deliver)
	if err != nil {
		return nil, err
	}
	// Transactions commit at random times, as requests arrive: before
	// each, an idle pause drawn uniformly from [0, OutboxPause). A relay
	// that polls then waits half its interval on average; one that is
	// woken by the commit does not wait. Back-to-back commits would instead
	// meet watermill-sql's subscriber in its immediate re-query after a
	// delivery, a rhythm no real load has (outbox-burst measures that load).
	op := func(ctx context.Context, seq int64) (time.Duration, error) {
		if !sleep(ctx, time.Duration(mrand.Int64N(int64(OutboxPause)))) {
			return 0, ctx.Err()
		}
		id := newItem(seq).ID
		t0, err := r.commit(ctx, seq)
		if err != nil {
			return 0, err
		}
		err = w.wait(ctx, id)
		return time.Since(t0), err
	}
	return &trial{
		round: func(ctx context.Context, t Timing) (sample, error) {
			if !e.opts.Quick {
				t.MinSamples = max(t.MinSamples, ceilDiv(OutboxMinSamples, e.opts.Rounds))
			}
			lat, err := latencies(ctx, t, op)
			return sample{lat: lat}, err
		},
		close: r.close,
	}, nil
}

// outboxBurstTrial: OutboxWriters commit back to back, at most InFlight
// rows committed but not yet handled; the relay forwards to the backend's
// broker. Each round yields the commit-to-handler latency of every row
// committed after the warm-up and the rows handled per second in the
// window.
func outboxBurstTrial(e env) (*trial, error) {
	if e.backend.name == GoChannel {
		return nil, errSkip
	}
	// A round's rows: the relay may still deliver rows of the previous
	// round while the next starts, which deliver then ignores.
	type burst struct {
		f   *fanout
		rec *commitLatencies
	}
	var cur atomic.Pointer[burst]
	r, err := e.side.outbox(e.ctx, e.ns, false, func(id string) {
		if b := cur.Load(); b != nil {
			b.rec.delivered(id)
			b.f.deliver(0, id)
		}
	})
	if err != nil {
		return nil, err
	}
	return &trial{
		round: func(ctx context.Context, t Timing) (sample, error) {
			if !e.opts.Quick {
				t.MinSamples = max(t.MinSamples, ceilDiv(OutboxBurstMinRows, e.opts.Rounds))
			}
			b := &burst{newFanout(1, InFlight), newCommitLatencies(time.Now().Add(t.Warmup))}
			cur.Store(b)
			n, el, err := b.f.run(ctx, t, OutboxWriters, 1, single(func(ctx context.Context, seq int64) error {
				t0, err := r.commit(ctx, seq)
				if err == nil {
					b.rec.committed(newItem(seq).ID, t0)
				}
				return err
			}))
			return sample{lat: b.rec.sorted(), ops: n, el: el}, err
		},
		close: r.close,
	}, nil
}

func rateTrial(hops int) func(env) (*trial, error) {
	return func(e env) (*trial, error) {
		r, err := e.side.commands(e.ctx, e.ns, hops)
		if err != nil {
			return nil, err
		}
		return &trial{
			round: func(ctx context.Context, t Timing) (sample, error) {
				n, el, to, err := rate(ctx, t, HighConcurrency, r.op)
				return sample{ops: n, el: el, timeouts: to}, err
			},
			close: r.close,
		}, nil
	}
}

// fanoutTrial: publishers publish an event that groups subscribing
// services handle; it counts once all of them did.
func fanoutTrial(groups, publishers int) func(env) (*trial, error) {
	return func(e env) (*trial, error) {
		f := newFanout(groups, InFlight)
		r, err := e.side.events(e.ctx, e.ns, groups, f.deliver)
		if err != nil {
			return nil, err
		}
		return &trial{
			round: func(ctx context.Context, t Timing) (sample, error) {
				n, el, err := f.run(ctx, t, publishers, 1, single(r.op))
				return sample{ops: n, el: el}, err
			},
			close: r.close,
		}, nil
	}
}

func publishTrial(e env) (*trial, error) {
	r, err := e.side.publisher(e.ctx, e.ns)
	if err != nil {
		return nil, err
	}
	return &trial{
		round: func(ctx context.Context, t Timing) (sample, error) {
			n, el, to, err := rate(ctx, t, Publishers, r.op)
			return sample{ops: n, el: el, timeouts: to}, err
		},
		close: r.close,
	}, nil
}

func allocTrial(e env) (*trial, error) {
	r, err := e.side.commands(e.ctx, e.ns, 1)
	if err != nil {
		return nil, err
	}
	return &trial{
		round: func(ctx context.Context, _ Timing) (sample, error) {
			a, b, err := allocs(ctx, e.opts.AllocCalls, r.op)
			return sample{values: []float64{a, b}, n: int64(e.opts.AllocCalls)}, err
		},
		close: r.close,
	}, nil
}

func rssTrial(e env) (*trial, error) {
	if e.opts.RSSWindow <= 0 {
		return nil, errSkip
	}
	return &trial{
		round: func(ctx context.Context, _ Timing) (sample, error) {
			mib, n, err := childRSS(ctx, e.sideID, e.opts.RSSWindow)
			return sample{values: []float64{mib}, n: n}, err
		},
		close: func() error { return nil },
	}, nil
}

// errSkip: the workload does not apply (not an error).
var errSkip = errors.New("skipped")

func ceilDiv(a, b int) int { return (a + b - 1) / max(b, 1) }

// roundTiming is the timing of round r of n: the first round warms up
// fully, later ones half as long (the topology is warm, the load needs to
// ramp up again); the window, the minimum of operations and its bound are
// shared out among the rounds.
func roundTiming(t Timing, r, n int) Timing {
	if r > 0 {
		t.Warmup /= 2
	}
	t.Window /= time.Duration(n)
	t.MaxWindow /= time.Duration(n)
	t.MinSamples = ceilDiv(t.MinSamples, n)
	return t
}

// lowerIsBetter reports whether a smaller value of unit is better.
func lowerIsBetter(unit string) bool {
	switch unit {
	case "ms", "allocs/op", "B/op", "MiB":
		return true
	}
	return false
}

// ratio is > 1 when Switchboard is better: sb/raw for rates, raw/sb for
// costs.
func ratio(sb, raw float64, unit string) float64 {
	if lowerIsBetter(unit) {
		sb, raw = raw, sb
	}
	if raw == 0 {
		return math.Inf(1)
	}
	return sb / raw
}

// Run measures every selected workload on every selected backend, both
// sides, and writes the figures to w. It returns an error when any figure
// failed (after writing the others).
func Run(ctx context.Context, o Options, w io.Writer) error {
	o = o.Defaults()
	runID := newRunID()
	mode := "full"
	if o.Quick {
		mode = "quick"
	}
	fmt.Fprintf(w, "# switchboard bench (%s mode), run %s, %s\n", mode, runID, time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "# cores: %d (GOMAXPROCS %d), %s %s/%s, cpu: %s\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH, cpuModel())
	t := o.Timing
	fmt.Fprintf(w, "# each figure: %s measured per side (at least %d operations, at most %s) in %d round(s) alternating with the other side, after a warm-up of %s (later rounds half); an operation times out after %s; payload %d-byte JSON\n",
		t.Window, t.MinSamples, t.MaxWindow, o.Rounds, t.Warmup, OpTimeout, PayloadSize)
	fmt.Fprintf(w, "# c64: %d callers; events: 2 subscribing services, %d publishers, at most %d events in flight; publish: %d publishers, groups created, consumers stopped\n",
		HighConcurrency, Publishers, InFlight, Publishers)
	fmt.Fprintf(w, "# event-1pub: 1 publisher, 1 subscribing service; outbox-c1: commit to handler, relay to an in-process bus, one transaction at a time after a random pause in [0, %s); outbox-burst: %d writers committing back to back (a business row and the event per transaction, at most %d rows in flight), relay to the backend\n", OutboxPause, OutboxWriters, InFlight)
	fmt.Fprintf(w, "# <figure>@<variant>: the same Switchboard figure against raw Watermill tuned away from its documented defaults (BENCHMARKS.md: Tuned variants and ceilings)\n")
	fmt.Fprintf(w, "# <backend>/ceiling-*: the broker's Go client alone, no Watermill, no Switchboard (one value); a figure line's last column is each side's fraction of its ceiling (switchboard/raw)\n")
	fmt.Fprintf(w, "# ratio > 1 means Switchboard is better: rates switchboard/raw, latency, allocations and RSS raw/switchboard\n")
	fmt.Fprintf(w, "# %-32s %12s %12s %8s %-8s %s\n", "figure", "switchboard", "raw-watermill", "ratio", "unit", "of-ceiling")

	var failed []string
	seq := 0
	for _, name := range o.Backends {
		f, err := runBackend(ctx, o, name, runID, &seq, w)
		failed = append(failed, f...)
		if err != nil {
			return err
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d figure(s) failed: %s", len(failed), strings.Join(failed, ", "))
	}
	return nil
}

// figure opens the workload on every side (Switchboard, raw Watermill and,
// for tuned workloads, its tuned variants; or the client alone for a
// ceiling), measures them in alternating rounds (sb, raw, variants, then in
// reverse order, …) so that a noisy neighbour hits all alike, closes them
// and writes the figures.
func figure(ctx context.Context, o Options, b *backend, wl workload, ns string, w io.Writer) error {
	var ids []string
	sides := map[string]side{}
	switch {
	case wl.client:
		if o.Side == "both" {
			ids = []string{"client"}
		}
	default:
		if o.Side != "raw" {
			ids, sides["sb"] = append(ids, "sb"), b.sb
		}
		if o.Side != "sb" {
			ids, sides["raw"] = append(ids, "raw"), b.raw
			if wl.tuned {
				for _, v := range b.tuned {
					ids, sides[v.name] = append(ids, v.name), v.side
				}
			}
		}
	}
	trials := map[string]*trial{}
	var errs []error
	for _, id := range ids {
		if !wl.client && sides[id] == nil {
			errs = append(errs, fmt.Errorf("%s: TODO: backend not available in this build", id))
			continue
		}
		tr, err := wl.open(env{ctx: ctx, side: sides[id], sideID: id, ns: ns + strings.ReplaceAll(id, "-", ""), backend: b, opts: o})
		switch {
		case errors.Is(err, errSkip):
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", id, err))
		default:
			trials[id] = tr
		}
	}
	rounds := o.Rounds
	if wl.kind == valueKind {
		rounds = 1
	}
	samples := map[string][]sample{}
	for r := range rounds {
		order := ids
		if r%2 == 1 {
			order = slices.Clone(ids)
			slices.Reverse(order)
		}
		t := roundTiming(o.Timing, r, rounds)
		for _, id := range order {
			tr := trials[id]
			if tr == nil || ctx.Err() != nil {
				continue
			}
			if o.Progress != nil {
				fmt.Fprintf(o.Progress, "%s %s/%s (%s, round %d/%d)\n", time.Now().Format("15:04:05"), b.name, wl.name, id, r+1, rounds)
			}
			s, err := tr.round(ctx, t)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", id, err))
				trials[id] = nil
				if cerr := tr.close(); cerr != nil {
					errs = append(errs, fmt.Errorf("%s: closing: %w", id, cerr))
				}
				continue
			}
			samples[id] = append(samples[id], s)
		}
	}
	res := map[string][]metric{}
	for _, id := range ids {
		if tr := trials[id]; tr != nil {
			if err := tr.close(); err != nil {
				errs = append(errs, fmt.Errorf("%s: closing: %w", id, err))
			}
			res[id] = wl.metrics(samples[id])
		}
	}
	name := b.name + "/" + wl.name
	if wl.client {
		if m := res["client"]; m != nil {
			b.ceilings[wl.name] = m[0].value
			writeCeiling(w, name, m[0])
		}
		return errors.Join(errs...)
	}
	ceiling := b.ceilings[wl.ceiling]
	writeFigures(w, name, res["sb"], res["raw"], ceiling)
	if wl.tuned {
		for _, v := range b.tuned {
			if res[v.name] != nil {
				writeFigures(w, name+"@"+v.name, res["sb"], res[v.name], ceiling)
			}
		}
	}
	return errors.Join(errs...)
}

// runBackend measures the selected workloads on one backend, then cleans
// up (also when ctx ends). It returns the figures that failed, and an error
// only when ctx ended.
func runBackend(ctx context.Context, o Options, name, runID string, seq *int, w io.Writer) ([]string, error) {
	unlock, err := lockServer(ctx, name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	b, err := openBackend(ctx, name, runID)
	if err != nil {
		fmt.Fprintf(w, "# %s: skipped: %v\n", name, err)
		return nil, nil
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := b.cleanup(cctx); err != nil {
			fmt.Fprintf(w, "# %s: cleanup: %v\n", name, err)
		}
	}()
	var failed []string
	for _, wl := range workloads {
		if !o.selected(wl) || wl.only != "" && wl.only != name {
			continue
		}
		*seq++
		if err := figure(ctx, o, b, wl, fmt.Sprintf("%sf%d", nsPrefix(runID), *seq), w); err != nil {
			if ctx.Err() != nil {
				return failed, ctx.Err()
			}
			fmt.Fprintf(w, "# %s/%s failed: %v\n", name, wl.name, err)
			failed = append(failed, name+"/"+wl.name)
		}
	}
	return failed, nil
}

func (o Options) selected(w workload) bool {
	if len(o.Workloads) > 0 {
		return slices.Contains(o.Workloads, w.name)
	}
	return w.quick || !o.Quick
}

// writeFigures prints one line per metric: figure, Switchboard's value, raw
// Watermill's, the ratio and the unit; "-" for a side that did not run.
// When ceiling is not 0, rate lines end with each side's fraction of it,
// "<switchboard>/<raw>". Figures based on few operations get a comment
// saying how many.
func writeFigures(w io.Writer, figure string, sb, raw []metric, ceiling float64) {
	ref := sb
	if ref == nil {
		ref = raw
	}
	for i, m := range ref {
		name := figure
		if m.name != "" {
			name += "-" + m.name
		}
		sv, rv, r := "-", "-", "-"
		sf, rf := "-", "-"
		if sb != nil {
			sv, sf = format(sb[i].value), format(sb[i].value/ceiling)
		}
		if raw != nil {
			rv, rf = format(raw[i].value), format(raw[i].value/ceiling)
		}
		if sb != nil && raw != nil {
			r = format2(ratio(sb[i].value, raw[i].value, m.unit))
		}
		line := fmt.Sprintf("%-34s %12s %12s %8s %s", name, sv, rv, r, m.unit)
		if ceiling > 0 && !lowerIsBetter(m.unit) {
			line = fmt.Sprintf("%-34s %12s %12s %8s %-8s %s/%s", name, sv, rv, r, m.unit, sf, rf)
		}
		fmt.Fprintln(w, line)
	}
	for _, s := range []struct {
		id string
		m  []metric
	}{{"switchboard", sb}, {"raw-watermill", raw}} {
		if len(s.m) == 0 || s.m[0].unit == "MiB" {
			continue
		}
		if m := s.m[0]; m.timeouts > 0 {
			fmt.Fprintf(w, "#   %s: %s: %d operation(s) timed out (after %s)\n", figure, s.id, m.timeouts, OpTimeout)
		} else if m.n > 0 && m.n < 100 {
			fmt.Fprintf(w, "#   %s: %s based on %d operations\n", figure, s.id, m.n)
		}
	}
}

// writeCeiling prints a client-only figure: its name, value and unit.
func writeCeiling(w io.Writer, figure string, m metric) {
	fmt.Fprintf(w, "%-34s %12s %s\n", figure, format(m.value), m.unit)
	if m.timeouts > 0 {
		fmt.Fprintf(w, "#   %s: %d operation(s) timed out (after %s)\n", figure, m.timeouts, OpTimeout)
	}
}

// format2 prints a ratio with two decimals.
func format2(v float64) string {
	if math.IsInf(v, 1) || math.IsNaN(v) {
		return format(v)
	}
	return fmt.Sprintf("%.2f", v)
}

// format prints v with three significant digits, without exponent.
func format(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "inf"
	case math.IsNaN(v):
		return "nan"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	case v >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

func newRunID() string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b)
}

// cpuModel returns the first "model name" of /proc/cpuinfo, or "unknown".
func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
