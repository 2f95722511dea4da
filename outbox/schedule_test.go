package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	wmsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/bridgetest"
	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/outbox"
)

// arrival is one delivery of a scheduled message.
type arrival struct {
	at, due time.Time
}

// arrivals records the deliveries on a topic, by message id.
type arrivals struct {
	mu sync.Mutex
	by map[string][]arrival
}

func receive(t *testing.T, b bridge.Bridge, topic string) *arrivals {
	t.Helper()
	sub, err := b.Subscriber(t.Context(), bridge.Spec{Topic: topic, Group: "g", Kind: bridge.Event, Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := sub.Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	a := &arrivals{by: map[string][]arrival{}}
	go func() {
		for m := range ch {
			now := time.Now()
			due, _ := time.Parse(time.RFC3339Nano, m.Metadata.Get("scheduled_for"))
			a.mu.Lock()
			a.by[m.UUID] = append(a.by[m.UUID], arrival{at: now, due: due})
			a.mu.Unlock()
			m.Ack()
		}
	}()
	return a
}

func (a *arrivals) count() (ids, total int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, x := range a.by {
		total += len(x)
	}
	return len(a.by), total
}

func (a *arrivals) get(id string) []arrival {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.by[id])
}

// runScheduler runs s on b until the test ends or the returned stop is
// called (which waits for Run to return).
func runScheduler(t *testing.T, s *outbox.Scheduler, b bridge.Bridge) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, b) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	t.Cleanup(func() { _ = s.Close() })
	return stop
}

func newScheduler(url, schema string) *outbox.Scheduler {
	return &outbox.Scheduler{DatabaseURL: url, Schema: schema, Logger: discard(), LeaderPoll: 100 * time.Millisecond, LeaseTTL: 3 * time.Second}
}

func scheduledMsg(id string, at time.Time) *message.Message {
	m := message.NewMessage(id, []byte(`{}`))
	m.Metadata.Set("kind", "event")
	m.Metadata.Set("scheduled_for", at.UTC().Format(time.RFC3339Nano))
	return m
}

func percentile(d []time.Duration, p float64) time.Duration {
	slices.Sort(d)
	return d[min(len(d)-1, int(p*float64(len(d))))]
}

// TestScheduledLateness publishes 1,000 messages due over 2 s through the
// outbox Publisher (the "scheduled_for" key) and checks that each arrives
// once, none early, and late by little.
func TestScheduledLateness(t *testing.T) {
	url, db, schema := setup(t)
	b := inproc.New()
	got := receive(t, b, "sched.late")
	runScheduler(t, newScheduler(url, schema), b)

	p, err := outbox.NewPublisher(wmsql.BeginnerFromStdSQL(db), schema)
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000
	start := time.Now().Add(500 * time.Millisecond)
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = scheduledMsg(fmt.Sprintf("late-%d", i), start.Add(time.Duration(i)*2*time.Second/n))
	}
	if err := p.Publish("sched.late", msgs...); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "every message", func() bool { ids, _ := got.count(); return ids == n })
	time.Sleep(200 * time.Millisecond) // a duplicate would come now
	var late []time.Duration
	for _, m := range msgs {
		a := got.get(m.UUID)
		if len(a) != 1 {
			t.Fatalf("%s delivered %d times", m.UUID, len(a))
		}
		if d := a[0].at.Sub(a[0].due); d < -time.Millisecond {
			t.Errorf("%s delivered %s early", m.UUID, -d)
		} else {
			late = append(late, d)
		}
	}
	p50, p99 := percentile(late, 0.50), percentile(late, 0.99)
	t.Logf("lateness of %d messages due over 2 s: p50 %s, p99 %s, max %s", n, p50, p99, late[len(late)-1])
	if p99 > 100*time.Millisecond {
		t.Errorf("p99 lateness %s > 100ms", p99)
	}
}

func TestPublishMalformedScheduledFor(t *testing.T) {
	_, db, schema := setup(t)
	p, err := outbox.NewPublisher(wmsql.BeginnerFromStdSQL(db), schema)
	if err != nil {
		t.Fatal(err)
	}
	m := message.NewMessage("bad", []byte(`{}`))
	m.Metadata.Set("scheduled_for", "tomorrow")
	if err := p.Publish("t", m); err == nil {
		t.Fatal("a malformed scheduled_for was accepted")
	}
	if n := rows(t, db, `SELECT count(*) FROM "`+schema+`".outbox`); n != 0 {
		t.Errorf("%d rows written", n)
	}
}

// TestScheduleCancel cancels half of 1,000 scheduled messages: exactly the
// other half arrives.
func TestScheduleCancel(t *testing.T) {
	url, _, schema := setup(t)
	b := inproc.New()
	got := receive(t, b, "sched.cancel")
	s := newScheduler(url, schema)
	runScheduler(t, s, b)

	const n = 1000
	start := time.Now().Add(3 * time.Second) // due over 3 to 4 s: time to schedule and cancel
	ids := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				ids[i] = fmt.Sprintf("c-%d", i)
				if err := s.Schedule(t.Context(), "sched.cancel", scheduledMsg(ids[i], time.Time{}), start.Add(time.Duration(i)*time.Second/n)); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("scheduled %d messages in %s", n, time.Since(start.Add(-3*time.Second)))
	if err := s.Schedule(t.Context(), "sched.cancel", scheduledMsg("dup", time.Time{}), start.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.Schedule(t.Context(), "sched.cancel", scheduledMsg("dup", time.Time{}), start); !errors.Is(err, outbox.ErrAlreadyScheduled) {
		t.Fatalf("second Schedule of one id: %v, want ErrAlreadyScheduled", err)
	}
	if err := s.Cancel(t.Context(), "dup"); err != nil {
		t.Fatal(err)
	}
	cancelled := map[string]bool{}
	perm := rand.Perm(n)[:n/2]
	for _, i := range perm {
		cancelled[ids[i]] = true
	}
	errs = make(chan error, n)
	for w := range 8 {
		wg.Go(func() {
			for j := w; j < len(perm); j += 8 {
				if err := s.Cancel(t.Context(), ids[perm[j]]); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if time.Now().After(start) {
		t.Fatalf("scheduling and cancelling took too long (%s past the first due time)", time.Since(start))
	}
	waitFor(t, 10*time.Second, "the other half", func() bool { k, _ := got.count(); return k >= n/2 })
	time.Sleep(300 * time.Millisecond)
	if k, total := got.count(); k != n/2 || total != n/2 {
		t.Fatalf("%d ids, %d deliveries; want %d", k, total, n/2)
	}
	for _, id := range ids {
		if a := got.get(id); cancelled[id] != (len(a) == 0) {
			t.Errorf("%s: cancelled %v, delivered %d times", id, cancelled[id], len(a))
		}
	}
	for _, id := range []string{ids[0], "unknown"} {
		if cancelled[id] {
			continue
		}
		if err := s.Cancel(t.Context(), id); !errors.Is(err, engine.ErrScheduleNotFound) {
			t.Errorf("Cancel(%s): %v, want ErrScheduleNotFound", id, err)
		}
		if err := s.Reschedule(t.Context(), id, time.Now()); !errors.Is(err, engine.ErrScheduleNotFound) {
			t.Errorf("Reschedule(%s): %v, want ErrScheduleNotFound", id, err)
		}
	}
}

func TestReschedule(t *testing.T) {
	url, _, schema := setup(t)
	b := inproc.New()
	got := receive(t, b, "sched.move")
	s := newScheduler(url, schema)
	runScheduler(t, s, b)
	now := time.Now()
	// The relay sleeps until the earliest due time, 1 h away: moving a
	// message earlier must wake it.
	if err := s.Schedule(t.Context(), "sched.move", scheduledMsg("earlier", time.Time{}), now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.Schedule(t.Context(), "sched.move", scheduledMsg("later", time.Time{}), now.Add(400*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := s.Reschedule(t.Context(), "later", now.Add(1500*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	moved := time.Now().Add(200 * time.Millisecond)
	if err := s.Reschedule(t.Context(), "earlier", moved); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "both", func() bool { k, _ := got.count(); return k == 2 })
	e, l := got.get("earlier")[0], got.get("later")[0]
	if !e.due.Equal(moved) || e.at.Before(moved) || e.at.Sub(moved) > 100*time.Millisecond {
		t.Errorf("earlier: due %s, arrived %s after %s", e.due, e.at.Sub(moved), moved)
	}
	if want := now.Add(1500 * time.Millisecond); !l.due.Equal(want) || l.at.Before(want) {
		t.Errorf("later: due %s, arrived at %s, want at %s", l.due, l.at, want)
	}
}

func TestScheduleInThePast(t *testing.T) {
	url, _, schema := setup(t)
	b := inproc.New()
	got := receive(t, b, "sched.past")
	s := newScheduler(url, schema)
	runScheduler(t, s, b)
	time.Sleep(200 * time.Millisecond) // leading, waiting
	sent := time.Now()
	if err := s.Schedule(t.Context(), "sched.past", scheduledMsg("past", time.Time{}), sent.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the message", func() bool { k, _ := got.count(); return k == 1 })
	if d := got.get("past")[0].at.Sub(sent); d > 200*time.Millisecond {
		t.Errorf("a message due an hour ago arrived %s after it was scheduled", d)
	}
}

// TestRecurringOnceAcrossRelays runs three Schedulers on one schema with a
// schedule ticking every second; the leader stops after 3 s, the next
// one's connection is cut after 6 s. Every tick arrives exactly once, with
// no gap.
func TestRecurringOnceAcrossRelays(t *testing.T) {
	url, db, schema := setup(t)
	b := inproc.New()
	got := receive(t, b, "sched.tick")
	r := engine.Recurrence{Name: "tick", Spec: "*/1 * * * * *", Topic: "sched.tick",
		Msg: scheduledMsg("template", time.Time{}), CatchUp: engine.CatchUpAll}
	delete(r.Msg.Metadata, "scheduled_for")
	var stops []func()
	for i := range 3 {
		s := newScheduler(url, schema)
		if err := s.Recur(t.Context(), r); err != nil {
			t.Fatal(err)
		}
		stops = append(stops, runScheduler(t, s, b))
		if i == 0 {
			waitFor(t, 5*time.Second, "a leader", func() bool {
				return rows(t, db, `SELECT count(*) FROM "`+schema+`".outbox_leader WHERE expires_at > now()`) == 1
			})
		}
	}
	first := time.Now()
	time.Sleep(3 * time.Second)
	stops[0]() // the leader
	time.Sleep(3 * time.Second)
	// The new leader's connection ends abruptly: it reconnects, and it or
	// the last standby leads on.
	if n := rows(t, db, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM "`+schema+`".outbox_leader) x`); n != 1 {
		t.Fatalf("%d leaders terminated", n)
	}
	time.Sleep(3 * time.Second)
	last := time.Now()
	time.Sleep(300 * time.Millisecond)

	got.mu.Lock()
	defer got.mu.Unlock()
	var ticks []time.Time
	for id, a := range got.by {
		if len(a) != 1 {
			t.Errorf("tick %s delivered %d times", a[0].due, len(a))
		}
		if want := outbox.TickID("tick", a[0].due); id != want {
			t.Errorf("tick %s has id %s, want %s", a[0].due, id, want)
		}
		ticks = append(ticks, a[0].due)
	}
	slices.SortFunc(ticks, time.Time.Compare)
	for want := first.Truncate(time.Second).Add(time.Second); !want.After(last.Add(-time.Second)); want = want.Add(time.Second) {
		if !slices.ContainsFunc(ticks, want.Equal) {
			t.Errorf("tick %s missing (ticks %v)", want.Format(time.TimeOnly), ticks)
		}
	}
	t.Logf("%d ticks from %s to %s", len(ticks), first.Format(time.StampMilli), last.Format(time.StampMilli))
}

// TestRecurringCatchUp: a schedule whose next tick is 10 ticks in the past
// writes one message (CatchUpOnce), none (CatchUpSkip) or ten (CatchUpAll).
func TestRecurringCatchUp(t *testing.T) {
	for _, c := range []struct {
		policy engine.CatchUp
		want   int
	}{{engine.CatchUpOnce, 1}, {engine.CatchUpSkip, 0}, {engine.CatchUpAll, 10}} {
		t.Run(fmt.Sprint(c.policy), func(t *testing.T) {
			url, db, schema := setup(t)
			b := inproc.New()
			got := receive(t, b, "sched.hourly")
			s := newScheduler(url, schema)
			msg := message.NewMessage("template", []byte(`{}`))
			msg.Metadata.Set("kind", "event")
			if err := s.Recur(t.Context(), engine.Recurrence{Name: "hourly", Spec: "@every 1h", Topic: "sched.hourly", Msg: msg, CatchUp: c.policy}); err != nil {
				t.Fatal(err)
			}
			// Ticks at -9.5 h, -8.5 h, ... -0.5 h: ten missed.
			if _, err := db.ExecContext(t.Context(), `UPDATE "`+schema+`".outbox_recurring SET next_at = now() - interval '9.5 hours'`); err != nil {
				t.Fatal(err)
			}
			runScheduler(t, s, b)
			waitFor(t, 5*time.Second, "the schedule to catch up", func() bool {
				return rows(t, db, `SELECT count(*) FROM "`+schema+`".outbox_recurring WHERE next_at > now()`) == 1 &&
					rows(t, db, `SELECT count(*) FROM "`+schema+`".outbox WHERE forwarded_at IS NULL`) == 0
			})
			time.Sleep(100 * time.Millisecond)
			if k, total := got.count(); k != c.want || total != c.want {
				t.Errorf("%d ids, %d messages; want %d", k, total, c.want)
			}
			// Declaring the same schedule again changes nothing.
			var before time.Time
			if err := db.QueryRow(`SELECT next_at FROM "` + schema + `".outbox_recurring`).Scan(&before); err != nil {
				t.Fatal(err)
			}
			if err := s.Recur(t.Context(), engine.Recurrence{Name: "hourly", Spec: "@every 1h", Topic: "sched.hourly", Msg: msg, CatchUp: c.policy}); err != nil {
				t.Fatal(err)
			}
			var after time.Time
			if err := db.QueryRow(`SELECT next_at FROM "` + schema + `".outbox_recurring`).Scan(&after); err != nil {
				t.Fatal(err)
			}
			if !after.Equal(before) {
				t.Errorf("re-declaring moved next_at from %s to %s", before, after)
			}
		})
	}
}

// The environment of TestSchedulerHelperProcess.
const (
	helperSchemaEnv = "SWITCHBOARD_SCHED_HELPER_SCHEMA"
	helperURLEnv    = "SWITCHBOARD_SCHED_HELPER_URL"
)

// TestSchedulerHelperProcess is not a test: TestScheduledSurviveSIGKILL
// runs the test binary with it selected and the environment set. It runs a
// Scheduler forwarding to NATS until it is killed.
func TestSchedulerHelperProcess(t *testing.T) {
	schema := os.Getenv(helperSchemaEnv)
	if schema == "" {
		return // run as part of the normal suite: nothing to do
	}
	b := openServer(t, testenv.NATS)
	s := newScheduler(os.Getenv(helperURLEnv), schema)
	s.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := s.Run(context.Background(), b); err != nil {
		t.Fatal(err)
	}
}

// TestScheduledSurviveSIGKILL kills the process forwarding 2,000 messages
// due over 4 s twice, starting a new one each time: every message arrives,
// at least once.
func TestScheduledSurviveSIGKILL(t *testing.T) {
	url, db, schema := setup(t)
	target := openServer(t, testenv.NATS)
	topic := "event." + bridgetest.Unique("schedkill")
	got := receive(t, target, topic)
	p, err := outbox.NewPublisher(wmsql.BeginnerFromStdSQL(db), schema)
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000
	start := time.Now().Add(500 * time.Millisecond)
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = scheduledMsg(fmt.Sprintf("k-%d", i), start.Add(time.Duration(i)*4*time.Second/n))
	}
	if err := p.Publish(topic, msgs...); err != nil {
		t.Fatal(err)
	}
	spawn := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSchedulerHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), helperSchemaEnv+"="+schema, helperURLEnv+"="+url)
		cmd.Stderr = testWriter{t}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	cmd := spawn()
	for _, at := range []time.Duration{1500 * time.Millisecond, 3 * time.Second} {
		time.Sleep(time.Until(start.Add(at)))
		k, _ := got.count()
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		t.Logf("killed the forwarder at +%s with %d messages delivered", at, k)
		cmd = spawn()
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	waitFor(t, 30*time.Second, "every message", func() bool { k, _ := got.count(); return k == n })
	time.Sleep(500 * time.Millisecond)
	k, total := got.count()
	var late []time.Duration
	for _, m := range msgs {
		if a := got.get(m.UUID); len(a) == 0 {
			t.Errorf("%s lost", m.UUID)
		} else {
			late = append(late, a[0].at.Sub(a[0].due))
		}
	}
	t.Logf("%d messages, %d delivered, %d deliveries: %d duplicates; lateness p50 %s, p99 %s, max %s",
		n, k, total, total-k, percentile(late, 0.5), percentile(late, 0.99), late[len(late)-1])
	// Only a batch in flight at a kill (immediate and due rows: twice
	// BatchSize at most) may be forwarded again.
	if dup := total - k; dup > 2*2*outbox.DefaultBatchSize {
		t.Errorf("%d duplicates: more than the batches in flight at two kills", dup)
	}
}

func TestSchedulerValidate(t *testing.T) {
	err := (&outbox.Scheduler{Schema: "bad name", BatchSize: -1, LeaseTTL: time.Millisecond}).Validate()
	if err == nil {
		t.Fatal("an invalid Scheduler passed Validate")
	}
	for _, want := range []string{"DatabaseURL", "schema", "BatchSize", "LeaseTTL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not mention %s", err, want)
		}
	}
	if err := (&outbox.Scheduler{DatabaseURL: "postgres://localhost/db"}).Validate(); err != nil {
		t.Errorf("a valid Scheduler: %v", err)
	}
	if err := (&outbox.Scheduler{}).Cancel(t.Context(), "x"); err == nil {
		t.Error("Cancel on an invalid Scheduler succeeded")
	}
}

// TestRecurringCatchUpAllIsBounded: 1,500 missed ticks of a schedule
// ticking every second are written over several rounds (1,000 at most per
// round), each once.
func TestRecurringCatchUpAllIsBounded(t *testing.T) {
	url, db, schema := setup(t)
	b := inproc.New()
	got := receive(t, b, "sched.secondly")
	s := newScheduler(url, schema)
	msg := message.NewMessage("template", []byte(`{}`))
	msg.Metadata.Set("kind", "event")
	if err := s.Recur(t.Context(), engine.Recurrence{Name: "secondly", Spec: "@every 1s", Topic: "sched.secondly", Msg: msg, CatchUp: engine.CatchUpAll}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(t.Context(), `UPDATE "`+schema+`".outbox_recurring SET next_at = now() - interval '1500.5 seconds'`); err != nil {
		t.Fatal(err)
	}
	runScheduler(t, s, b)
	waitFor(t, 20*time.Second, "1,500 ticks", func() bool { k, _ := got.count(); return k >= 1500 })
	time.Sleep(200 * time.Millisecond)
	if k, total := got.count(); k != total || k < 1500 || k > 1503 {
		t.Errorf("%d ids, %d messages; want each of about 1,500 once", k, total)
	}
}

// heldBridge is b whose publishes wait until release is closed, after
// signalling entered (once).
type heldBridge struct {
	bridge.Bridge
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (h *heldBridge) Publisher() message.Publisher { return heldPublisher{h} }

type heldPublisher struct{ h *heldBridge }

func (p heldPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.h.once.Do(func() { close(p.h.entered) })
	<-p.h.release
	return p.h.Bridge.Publisher().Publish(topic, msgs...)
}

func (p heldPublisher) Close() error { return nil }

// A Reschedule that succeeds while the relay is publishing the message is
// honoured: the message is not delivered at its former time, before the
// time it was moved to. (A Reschedule that cannot honour it must fail with
// ErrScheduleNotFound: the message is already on its way.)
func TestRescheduleWhilePublishing(t *testing.T) {
	url, _, schema := setup(t)
	b := &heldBridge{Bridge: inproc.New(), entered: make(chan struct{}), release: make(chan struct{})}
	got := receive(t, b.Bridge, "sched.held")
	s := newScheduler(url, schema)
	runScheduler(t, s, b)
	if err := s.Schedule(t.Context(), "sched.held", scheduledMsg("held", time.Time{}), time.Now().Add(100*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.entered:
	case <-time.After(5 * time.Second):
		close(b.release)
		t.Fatal("the relay did not publish the due message")
	}
	moved := time.Now().Add(time.Hour)
	rerr := make(chan error, 1)
	go func() { rerr <- s.Reschedule(context.Background(), "held", moved) }()
	var err error
	select {
	case err = <-rerr: // answered while the publish is in flight
		close(b.release)
	case <-time.After(500 * time.Millisecond): // waits for the publish: fine
		close(b.release)
		err = <-rerr
	}
	time.Sleep(500 * time.Millisecond)
	if err == nil {
		if a := got.get("held"); len(a) > 0 && a[0].at.Before(moved) {
			t.Errorf("Reschedule to %s returned nil, yet the message was delivered at %s (its former time)", moved, a[0].at)
		}
	} else if !errors.Is(err, engine.ErrScheduleNotFound) {
		t.Errorf("Reschedule while publishing: %v, want nil or ErrScheduleNotFound", err)
	}
}
