package engine_test

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/switchboard-go/switchboard/bridge/nats"

	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/testenv"
)

// received is one message a scheduling test's handler got.
type received struct {
	in   EchoIn
	meta engine.Meta
	at   time.Time
}

// scheduleService subscribes to ev in a service of its own, sending what
// it receives to the returned channel (buffered for n).
func scheduleService(name string, ev *engine.Event[EchoIn], n int) (*engine.Service, chan received) {
	got := make(chan received, n)
	s := engine.NewService(name, "1")
	engine.Subscribe(s, ev, func(ctx context.Context, in EchoIn) error {
		got <- received{in: in, meta: engine.MetaFrom(ctx), at: time.Now()}
		return nil
	})
	return s, got
}

func waitFor(t *testing.T, got <-chan received, d time.Duration) received {
	t.Helper()
	select {
	case r := <-got:
		return r
	case <-time.After(d):
		t.Fatalf("nothing delivered within %s", d)
		return received{}
	}
}

// An event scheduled 200 ms ahead arrives not before its time, and within
// 50 ms after it, carrying that time as Meta.ScheduledFor.
func TestScheduleDeliversOnTime(t *testing.T) {
	t.Parallel()
	ev := engine.NewEvent[EchoIn]("sched.ontime")
	svc, got := scheduleService("sched-ontime", ev, 1)
	e, _ := start(t, inproc.New(), engine.Config{}, svc)
	at := time.Now().Add(200 * time.Millisecond)
	id, err := ev.Schedule(engine.WithEngine(t.Context(), e), at, EchoIn{Text: "hi"})
	if err != nil || id == "" {
		t.Fatalf("Schedule = %q, %v", id, err)
	}
	r := waitFor(t, got, 2*time.Second)
	if r.at.Before(at) {
		t.Errorf("delivered %s before its time", at.Sub(r.at))
	}
	if late := r.at.Sub(at); late > 50*time.Millisecond {
		t.Errorf("delivered %s after its time, want at most 50ms", late)
	}
	if !r.meta.ScheduledFor.Equal(at) || r.meta.ScheduledFor.Location() != time.UTC {
		t.Errorf("Meta.ScheduledFor = %v, want %v in UTC", r.meta.ScheduledFor, at)
	}
	if r.meta.MessageID != id {
		t.Errorf("message id %q, schedule id %q: want the same", r.meta.MessageID, id)
	}
}

// A scheduled command keeps the metadata Send would give it: correlation,
// tenant, principal, causation, trace; its handler sees when it was due.
func TestScheduleKeepsMetadata(t *testing.T) {
	t.Parallel()
	cmd := engine.NewCommand[EchoIn, EchoOut]("sched-meta", "1", "run")
	got := make(chan engine.Meta, 1)
	svc := engine.NewService("sched-meta", "1")
	engine.Handle(svc, cmd, func(ctx context.Context, in EchoIn) (EchoOut, error) {
		got <- engine.MetaFrom(ctx)
		return EchoOut{}, nil
	})
	e, _ := start(t, inproc.New(), engine.Config{}, svc)
	parent := engine.Meta{
		MessageID:     "parent-1",
		CorrelationID: "corr-1",
		TenantID:      "tenant-1",
		PrincipalID:   "user-1",
		Traceparent:   "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		Deadline:      time.Now().Add(time.Hour),
		ScheduledFor:  time.Now(), // describes the parent only
	}
	ctx := engine.WithMeta(engine.WithEngine(t.Context(), e), parent)
	at := time.Now().Add(50 * time.Millisecond).UTC()
	if _, err := cmd.Schedule(ctx, at, EchoIn{Text: "x"}); err != nil {
		t.Fatal(err)
	}
	var m engine.Meta
	select {
	case m = <-got:
	case <-time.After(2 * time.Second):
		t.Fatal("not delivered")
	}
	if m.CorrelationID != "corr-1" || m.TenantID != "tenant-1" || m.PrincipalID != "user-1" || m.CausationID != "parent-1" {
		t.Errorf("meta %+v: want correlation corr-1, tenant tenant-1, principal user-1, causation parent-1", m)
	}
	if engine.TraceID(m.Traceparent) != "0af7651916cd43dd8448eb211c80319c" {
		t.Errorf("traceparent %q: want the parent's trace", m.Traceparent)
	}
	if !m.Deadline.IsZero() {
		t.Errorf("a scheduled command inherited the deadline %v", m.Deadline)
	}
	if !m.ScheduledFor.Equal(at) {
		t.Errorf("ScheduledFor = %v, want %v", m.ScheduledFor, at)
	}
}

// 1,000 events scheduled over a second, 500 of them cancelled at random:
// exactly the other 500 arrive.
func TestScheduleCancelHalf(t *testing.T) {
	t.Parallel()
	const n = 1000
	ev := engine.NewEvent[EchoIn]("sched.cancel")
	svc, got := scheduleService("sched-cancel", ev, n)
	e, _ := start(t, inproc.New(), engine.Config{Logger: slog.New(slog.DiscardHandler)}, svc)
	ctx := engine.WithEngine(t.Context(), e)
	begin := time.Now().Add(500 * time.Millisecond) // time to cancel before the first is due
	ids := make([]string, n)
	due := make([]time.Time, n)
	for i := range n {
		due[i] = begin.Add(time.Duration(rand.IntN(1000)) * time.Millisecond)
		id, err := ev.Schedule(ctx, due[i], EchoIn{Count: i})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}
	kept := map[int]bool{}
	for i, k := range rand.Perm(n) {
		if i < n/2 {
			if err := e.Schedules().Cancel(ctx, ids[k]); err != nil {
				t.Fatalf("Cancel %d: %v", k, err)
			}
		} else {
			kept[k] = true
		}
	}
	if time.Now().After(begin) {
		t.Logf("cancelling took past the first due time (%s late): cancels may race deliveries", time.Since(begin))
	}
	deadline := time.After(time.Until(begin) + 1500*time.Millisecond)
	seen := map[int]bool{}
	var maxLate time.Duration
	for done := false; !done; {
		select {
		case r := <-got:
			if !kept[r.in.Count] || seen[r.in.Count] {
				t.Errorf("delivered %d: cancelled or twice", r.in.Count)
			}
			seen[r.in.Count] = true
			late := r.at.Sub(due[r.in.Count])
			if late < 0 {
				t.Errorf("delivered %d %s early", r.in.Count, -late)
			}
			maxLate = max(maxLate, late)
		case <-deadline:
			done = true
		}
	}
	if len(seen) != n/2 {
		t.Errorf("delivered %d, want %d", len(seen), n/2)
	}
	t.Logf("latest delivery: %s after its time", maxLate)
	if err := e.Schedules().Cancel(ctx, ids[0]); !errors.Is(err, engine.ErrScheduleNotFound) {
		t.Errorf("Cancel of a delivered or cancelled message: %v, want ErrScheduleNotFound", err)
	}
}

// Reschedule moves a message later and earlier; its ScheduledFor follows.
func TestReschedule(t *testing.T) {
	t.Parallel()
	ev := engine.NewEvent[EchoIn]("sched.move")
	svc, got := scheduleService("sched-move", ev, 2)
	e, _ := start(t, inproc.New(), engine.Config{}, svc)
	ctx := engine.WithEngine(t.Context(), e)
	now := time.Now()
	later, err := ev.Schedule(ctx, now.Add(100*time.Millisecond), EchoIn{Text: "later"})
	if err != nil {
		t.Fatal(err)
	}
	sooner, err := ev.Schedule(ctx, now.Add(time.Hour), EchoIn{Text: "sooner"})
	if err != nil {
		t.Fatal(err)
	}
	laterAt, soonerAt := now.Add(400*time.Millisecond), now.Add(200*time.Millisecond)
	if err := e.Schedules().Reschedule(ctx, later, laterAt); err != nil {
		t.Fatal(err)
	}
	if err := e.Schedules().Reschedule(ctx, sooner, soonerAt); err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		text string
		at   time.Time
	}{{"sooner", soonerAt}, {"later", laterAt}} {
		r := waitFor(t, got, 2*time.Second)
		if r.in.Text != want.text || r.at.Before(want.at) || !r.meta.ScheduledFor.Equal(want.at) {
			t.Errorf("got %q at %v (ScheduledFor %v), want %q at %v", r.in.Text, r.at, r.meta.ScheduledFor, want.text, want.at)
		}
	}
	if err := e.Schedules().Reschedule(ctx, later, time.Now()); !errors.Is(err, engine.ErrScheduleNotFound) {
		t.Errorf("Reschedule of a delivered message: %v, want ErrScheduleNotFound", err)
	}
	if err := e.Schedules().Cancel(ctx, "no-such-id"); !errors.Is(err, engine.ErrScheduleNotFound) {
		t.Errorf("Cancel of an unknown id: %v, want ErrScheduleNotFound", err)
	}
}

// A time in the past is due at once.
func TestSchedulePastIsAtOnce(t *testing.T) {
	t.Parallel()
	ev := engine.NewEvent[EchoIn]("sched.past")
	svc, got := scheduleService("sched-past", ev, 1)
	e, _ := start(t, inproc.New(), engine.Config{}, svc)
	at := time.Now().Add(-time.Hour)
	sent := time.Now()
	if _, err := ev.Schedule(engine.WithEngine(t.Context(), e), at, EchoIn{}); err != nil {
		t.Fatal(err)
	}
	r := waitFor(t, got, 2*time.Second)
	if d := r.at.Sub(sent); d > 50*time.Millisecond {
		t.Errorf("a past message took %s, want at once", d)
	}
	if !r.meta.ScheduledFor.Equal(at) {
		t.Errorf("ScheduledFor = %v, want %v", r.meta.ScheduledFor, at)
	}
}

// Schedule checks at the call what Send checks, and its time; it needs a
// running engine.
func TestScheduleRefuses(t *testing.T) {
	t.Parallel()
	ev := engine.NewEvent[EchoIn]("sched.refused")
	svc, _ := scheduleService("sched-refused", ev, 1)
	bus := inproc.New()
	t.Cleanup(func() { _ = bus.Close() })
	e, err := engine.New(engine.Config{SharedBridge: bus, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Register(svc); err != nil {
		t.Fatal(err)
	}
	ctx := engine.WithEngine(t.Context(), e)
	soon := time.Now().Add(time.Minute)
	if _, err := ev.Schedule(ctx, soon, EchoIn{}); !errors.Is(err, engine.ErrUnavailable) || !strings.Contains(err.Error(), "new") {
		t.Errorf("Schedule before Start: %v, want ErrUnavailable naming the state", err)
	}
	if err := e.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		ctx  context.Context
		at   time.Time
		in   EchoIn
		want error
	}{
		{"zero time", ctx, time.Time{}, EchoIn{}, engine.ErrInvalidInput},
		{"year 10000", ctx, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), EchoIn{}, engine.ErrInvalidInput},
		{"invalid payload", ctx, soon, EchoIn{Text: "invalid"}, engine.ErrInvalidInput},
		{"payload too large", ctx, soon, EchoIn{Text: strings.Repeat("x", engine.DefaultMaxPayloadBytes)}, engine.ErrPayloadTooLarge},
		{"metadata too large", engine.WithMeta(ctx, engine.Meta{TenantID: strings.Repeat("t", 5000)}), soon, EchoIn{}, engine.ErrMetadataTooLarge},
		{"no engine", t.Context(), soon, EchoIn{}, engine.ErrNoEngine},
	} {
		if _, err := ev.Schedule(c.ctx, c.at, c.in); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if err := e.Schedules().Reschedule(ctx, "x", time.Time{}); !errors.Is(err, engine.ErrInvalidInput) {
		t.Errorf("Reschedule to the zero time: %v, want ErrInvalidInput", err)
	}
	if err := e.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := ev.Schedule(ctx, soon, EchoIn{}); !errors.Is(err, engine.ErrUnavailable) || !strings.Contains(err.Error(), "stopped") {
		t.Errorf("Schedule after Stop: %v, want ErrUnavailable naming the state", err)
	}
}

// Every with a one-second spec fires about once a second, as a
// conversation of its own with ScheduledFor on the second, and no more
// after Stop.
func TestEveryFiresEachSecond(t *testing.T) {
	t.Parallel()
	ev := engine.NewEvent[EchoIn]("sched.every")
	svc, got := scheduleService("sched-every", ev, 100)
	engine.Every(svc, "tick", "*/1 * * * * *", ev, EchoIn{Text: "tick"})
	e, _ := start(t, inproc.New(), engine.Config{}, svc)
	time.Sleep(3 * time.Second)
	if err := e.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	n := len(got)
	if n < 2 || n > 4 {
		t.Errorf("%d ticks in 3 s, want about 3", n)
	}
	correlations := map[string]bool{}
	for range n {
		r := <-got
		if r.in.Text != "tick" || r.meta.ScheduledFor.IsZero() || r.meta.ScheduledFor.Nanosecond() != 0 {
			t.Errorf("tick %+v with ScheduledFor %v: want the payload, on a whole second", r.in, r.meta.ScheduledFor)
		}
		if late := r.at.Sub(r.meta.ScheduledFor); late < 0 || late > 250*time.Millisecond {
			t.Errorf("tick delivered %s after its time", late)
		}
		correlations[r.meta.CorrelationID] = true
	}
	if len(correlations) != n {
		t.Errorf("%d ticks share %d correlation ids, want one each", n, len(correlations))
	}
	time.Sleep(1500 * time.Millisecond)
	if len(got) != 0 {
		t.Errorf("%d ticks after Stop", len(got))
	}
}

// Every's mistakes are Register's errors.
func TestEveryRegisterErrors(t *testing.T) {
	t.Parallel()
	ev := engine.NewEvent[EchoIn]("sched.bad")
	cmd := engine.NewCommand[EchoIn, EchoOut]("sched-bad", "1", "run")
	for _, c := range []struct {
		name, want string
		every      func(*engine.Service)
	}{
		{"malformed spec", "cron spec", func(s *engine.Service) { engine.Every(s, "a", "every tuesday", ev, EchoIn{}) }},
		{"empty name", "invalid schedule name", func(s *engine.Service) { engine.Every(s, "", "@daily", ev, EchoIn{}) }},
		{"duplicate name", "declared twice", func(s *engine.Service) {
			engine.Every(s, "a", "@daily", ev, EchoIn{})
			engine.Every(s, "a", "@hourly", cmd, EchoIn{})
		}},
		{"invalid payload", "payload", func(s *engine.Service) { engine.Every(s, "a", "@daily", cmd, EchoIn{Text: "invalid"}) }},
		{"unknown catch-up", "CatchUp", func(s *engine.Service) {
			engine.Every(s, "a", "@daily", ev, EchoIn{}, engine.CatchUpPolicy(engine.CatchUp(7)))
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := engine.NewService("sched-bad", "1")
			c.every(s)
			e, err := engine.New(engine.Config{Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = e.Stop(context.Background()) })
			if err := e.Register(s); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Register: %v, want an error containing %q", err, c.want)
			}
		})
	}
}

// On a broker, an engine without Config.Scheduler refuses to schedule:
// Schedule, Cancel and Reschedule fail, and Every fails Register, with
// ErrNoScheduler.
func TestNoSchedulerOnBroker(t *testing.T) {
	t.Parallel()
	url := strings.TrimSuffix(testenv.URL(t, testenv.NATS), "/") + "?stream_prefix=SBTEST_&max_age=1h"
	e, err := engine.New(engine.Config{Bridge: url, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop(context.Background()) })
	ev := engine.NewEvent[EchoIn]("sched.broker")
	s := engine.NewService("sched-broker", "1")
	engine.Every(s, "tick", "@hourly", ev, EchoIn{})
	if err := e.Register(s); !errors.Is(err, engine.ErrNoScheduler) {
		t.Errorf("Register with Every: %v, want ErrNoScheduler", err)
	}
	if err := e.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx := engine.WithEngine(t.Context(), e)
	if _, err := ev.Schedule(ctx, time.Now().Add(time.Minute), EchoIn{}); !errors.Is(err, engine.ErrNoScheduler) {
		t.Errorf("Schedule: %v, want ErrNoScheduler", err)
	}
	if err := e.Schedules().Cancel(ctx, "x"); !errors.Is(err, engine.ErrNoScheduler) {
		t.Errorf("Cancel: %v, want ErrNoScheduler", err)
	}
	if err := e.Schedules().Reschedule(ctx, "x", time.Now()); !errors.Is(err, engine.ErrNoScheduler) {
		t.Errorf("Reschedule: %v, want ErrNoScheduler", err)
	}
}

// Scheduling is safe from many goroutines at once (run with -race).
func TestScheduleConcurrent(t *testing.T) {
	t.Parallel()
	const n = 200
	ev := engine.NewEvent[EchoIn]("sched.concurrent")
	svc, got := scheduleService("sched-concurrent", ev, n)
	e, _ := start(t, inproc.New(), engine.Config{}, svc)
	ctx := engine.WithEngine(t.Context(), e)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id, err := ev.Schedule(ctx, time.Now().Add(time.Duration(i%20)*time.Millisecond), EchoIn{Count: i})
			if err != nil {
				t.Error(err)
				return
			}
			if i%2 == 0 {
				_ = e.Schedules().Reschedule(ctx, id, time.Now().Add(30*time.Millisecond))
			}
		})
	}
	wg.Wait()
	for range n {
		waitFor(t, got, 2*time.Second)
	}
}
