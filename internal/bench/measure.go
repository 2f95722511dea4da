package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Timing is how long each figure runs.
type Timing struct {
	// Warmup runs the workload before anything is recorded.
	Warmup time.Duration
	// Window is how long a figure is recorded.
	Window time.Duration
	// MinSamples extends Window until this many operations completed (for
	// the slow paths: raw Watermill request/reply on PostgreSQL takes about
	// a second per call), but never beyond MaxWindow.
	MinSamples int
	// MaxWindow bounds a window that waits for MinSamples.
	MaxWindow time.Duration
}

// call is one operation of a measured workload.
type call func(ctx context.Context, seq int64) error

// timedCall is an operation that reports its own latency.
type timedCall func(ctx context.Context, seq int64) (time.Duration, error)

// errStop reports whether err is the workload being stopped rather than a
// failure.
func errStop(ctx context.Context, err error) bool {
	return ctx.Err() != nil || errors.Is(err, context.Canceled)
}

// OpTimeout bounds every operation. One that takes longer is abandoned and
// counted as timed out: in a latency figure it is a sample of unknown,
// infinite latency (so a p50 is "inf" when most calls never complete); in a
// rate figure it does not count as completed.
const OpTimeout = 10 * time.Second

// never is the latency recorded for an operation that timed out.
const never = time.Duration(math.MaxInt64)

// bounded runs op under OpTimeout. timedOut reports that op failed because
// its own deadline passed (not because ctx ended).
func bounded[T any](ctx context.Context, seq int64, op func(context.Context, int64) (T, error)) (v T, timedOut bool, err error) {
	octx, cancel := context.WithTimeout(ctx, OpTimeout)
	defer cancel()
	v, err = op(octx, seq)
	if err != nil && octx.Err() != nil && ctx.Err() == nil {
		return v, true, nil
	}
	return v, false, err
}

// latencies runs op sequentially (concurrency 1): Warmup first, then
// Window (extended to MinSamples, at most MaxWindow). It returns the sorted
// latencies, never for each operation that timed out.
func latencies(ctx context.Context, t Timing, op timedCall) ([]time.Duration, error) {
	var seq int64
	for start := time.Now(); seq == 0 || time.Since(start) < t.Warmup; seq++ {
		if _, _, err := bounded(ctx, seq, op); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	var out []time.Duration
	start := time.Now()
	for {
		el := time.Since(start)
		if len(out) > 0 && (el >= t.MaxWindow || el >= t.Window && len(out) >= t.MinSamples) {
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		d, timedOut, err := bounded(ctx, seq, op)
		if err != nil {
			return nil, err
		}
		if timedOut {
			d = never
		}
		out = append(out, d)
		seq++
	}
	slices.Sort(out)
	return out, nil
}

// percentile returns the p-th percentile (0 < p ≤ 100) of sorted, by the
// nearest-rank method.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(rank, len(sorted)-1))]
}

// rate runs op from conc goroutines. After Warmup it counts the operations
// that complete during Window (extended to MinSamples, at most MaxWindow).
// Then no new operation starts; those in flight may finish (for at most
// MaxWindow, then they are cancelled), so that the topology stops with
// nothing half done. It returns the operations completed during the window,
// the window's length, and how many operations timed out.
func rate(ctx context.Context, t Timing, conc int, op call) (int64, time.Duration, int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		done, seq atomic.Int64
		timeouts  atomic.Int64
		stopping  atomic.Bool
		errOnce   sync.Once
		first     error
		wg        sync.WaitGroup
	)
	for range conc {
		wg.Go(func() {
			for !stopping.Load() {
				_, timedOut, err := bounded(ctx, seq.Add(1), func(ctx context.Context, seq int64) (struct{}, error) {
					return struct{}{}, op(ctx, seq)
				})
				switch {
				case err != nil:
					if !errStop(ctx, err) {
						errOnce.Do(func() { first = err })
						cancel()
					}
					return
				case timedOut:
					timeouts.Add(1)
				default:
					done.Add(1)
				}
			}
		})
	}
	n, el, err := window(ctx, t, &done)
	stopping.Store(true)
	drain(&wg, t.MaxWindow, cancel)
	if first != nil {
		return 0, 0, 0, first
	}
	if err != nil {
		return 0, 0, 0, err
	}
	return n, el, timeouts.Load(), nil
}

// drain waits for wg, calling cancel after grace.
func drain(wg *sync.WaitGroup, grace time.Duration, cancel func()) {
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(grace):
		cancel()
		<-finished
	}
}

// window sleeps through the warm-up, then counts how far done moves during
// the window. It returns early when ctx ends.
func window(ctx context.Context, t Timing, done *atomic.Int64) (int64, time.Duration, error) {
	if !sleep(ctx, t.Warmup) {
		return 0, 0, ctx.Err()
	}
	base, start := done.Load(), time.Now()
	if !sleep(ctx, t.Window) {
		return 0, 0, ctx.Err()
	}
	for done.Load()-base < int64(t.MinSamples) && time.Since(start) < t.MaxWindow {
		if !sleep(ctx, 10*time.Millisecond) {
			return 0, 0, ctx.Err()
		}
	}
	return done.Load() - base, time.Since(start), nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// fanout tracks events through its consumers (one per subscribing
// group): an event is complete when every consumer has handled it
// (duplicates are ignored). At most window events are outstanding, so the
// publishers never run ahead of the consumers by more than that.
type fanout struct {
	consumers int
	slots     chan struct{}
	mu        sync.Mutex
	pending   map[string]uint8
	done      atomic.Int64
}

func newFanout(consumers, window int) *fanout {
	return &fanout{consumers: consumers, slots: make(chan struct{}, window), pending: map[string]uint8{}}
}

// deliver records that consumer handled the event with id.
func (f *fanout) deliver(consumer int, id string) {
	f.mu.Lock()
	mask, ok := f.pending[id]
	if !ok {
		f.mu.Unlock()
		return // a duplicate of a completed event, or not ours
	}
	mask |= 1 << consumer
	complete := mask == 1<<f.consumers-1
	if complete {
		delete(f.pending, id)
	} else {
		f.pending[id] = mask
	}
	f.mu.Unlock()
	if complete {
		<-f.slots
		f.done.Add(1)
	}
}

// batchCall publishes the events of seqs (one call, one batch).
type batchCall func(ctx context.Context, seqs []int64) error

// single turns a call publishing one event into a batchCall of batches of
// one.
func single(op call) batchCall {
	return func(ctx context.Context, seqs []int64) error { return op(ctx, seqs[0]) }
}

// run publishes from publishers goroutines, each event taking a slot; a
// batch takes the slots free at the moment, at least one and at most
// maxBatch. It returns the events completed during the window and its
// length. Afterwards it stops publishing and waits (at most MaxWindow) until
// the events in flight are handled.
func (f *fanout) run(ctx context.Context, t Timing, publishers, maxBatch int, publish batchCall) (int64, time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopCtx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		seq     atomic.Int64
		errOnce sync.Once
		first   error
		wg      sync.WaitGroup
	)
	for range publishers {
		wg.Go(func() {
			seqs := make([]int64, 0, maxBatch)
			for {
				select {
				case f.slots <- struct{}{}:
				case <-stopCtx.Done():
					return
				}
				seqs = append(seqs[:0], seq.Add(1))
			more:
				for len(seqs) < maxBatch {
					select {
					case f.slots <- struct{}{}:
						seqs = append(seqs, seq.Add(1))
					default:
						break more
					}
				}
				f.mu.Lock()
				for _, s := range seqs {
					f.pending[newItem(s).ID] = 0
				}
				f.mu.Unlock()
				if err := publish(ctx, seqs); err != nil {
					if !errStop(ctx, err) {
						errOnce.Do(func() { first = err })
						cancel()
					}
					return
				}
			}
		})
	}
	n, el, err := window(ctx, t, &f.done)
	stop()
	drain(&wg, t.MaxWindow, cancel)
	for deadline := time.Now().Add(t.MaxWindow); len(f.slots) > 0 && time.Now().Before(deadline) && ctx.Err() == nil; {
		time.Sleep(10 * time.Millisecond)
	}
	if first != nil {
		return 0, 0, first
	}
	if err != nil {
		return 0, 0, err
	}
	return n, el, nil
}

// allocs runs op n times sequentially after a short warm-up and returns the
// heap allocations and bytes per operation, counted over the whole process
// as testing.B's ReportAllocs does.
func allocs(ctx context.Context, n int, op call) (float64, float64, error) {
	for i := range max(n/10, 10) {
		if err := op(ctx, int64(i)); err != nil {
			return 0, 0, err
		}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		if err := op(ctx, int64(i)); err != nil {
			return 0, 0, err
		}
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / float64(n), float64(after.TotalAlloc-before.TotalAlloc) / float64(n), nil
}
