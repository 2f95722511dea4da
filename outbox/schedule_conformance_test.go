package outbox_test

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/outbox"
)

// TestScheduledConformance is the schedule store's proof on every broker:
// 10,000 events are scheduled in PostgreSQL (Event.Schedule inside
// transactions, outbox.WithTx), due over 20 s; two scheduler processes
// (`switchboard relay`, which forwards scheduled rows when due) hand them
// to the broker while the one that leads is SIGKILLed twice and restarted,
// and the broker itself is restarted once. A consumer process with the
// inbox (testdata/schedconsumer, built without the race detector) records
// each event's effect, its due time (Meta.ScheduledFor) and when it ran. Every event must have exactly one effect, none before it was
// due; the lateness distribution is logged, and its median over the events
// due outside the fault windows is bounded (maxLateP50).
func TestScheduledConformance(t *testing.T) {
	for _, broker := range []string{testenv.NATS, testenv.AMQP, testenv.Postgres, testenv.MQTT} {
		// 500 events due a second: on a slow 2-core VM beside the rest of
		// make test, 1,000 a second (10 s) was the relay's whole rate to
		// RabbitMQ, and the lateness measured the machine, not the timer.
		t.Run(broker, func(t *testing.T) { scheduledRun(t, broker, 10_000, 20*time.Second) })
	}
}

// maxLateP50 bounds the median lateness of the events due outside the
// fault windows. It guards the timer (a relay that waited for its 1 s
// sweep would show a median near 500 ms), not the speed, which is a figure
// measured alone (issue 15's target is 100 ms at p99; this test runs
// beside the rest of make test on a shared machine). The p99 is logged, not
// bounded: it measures how fast this machine drains the backlog of a
// broker restart (RabbitMQ's took 5 s after its window on a slow 2-core
// VM, p99 1.7 s) and warms up (the first second's events up to 0.9 s
// late), where a quiet run on a faster VM logged p99 62–76 ms on NATS,
// RabbitMQ and PostgreSQL, 191 ms on MQTT, and the median is 6–9 ms on
// both.
const maxLateP50 = 300 * time.Millisecond

// Fault windows, by due time: a killed leader is replaced within a
// LeaderPoll (1 s) of its session's end; a broker that stops holds the
// messages in flight to it or from it (due up to a second before), and
// takes its clients a few seconds to reconnect to once back.
const (
	killWindow   = 1500 * time.Millisecond
	outageLength = time.Second
	outageBefore = time.Second
	outageWindow = outageLength + 3*time.Second
)

func scheduledRun(t *testing.T, broker string, n int, spread time.Duration) {
	dbURL, db, schema := setup(t)
	q := func(table string) string { return `"` + schema + `".` + table }
	if _, err := db.Exec(`CREATE TABLE ` + q("effects") + ` (id int NOT NULL, due timestamptz NOT NULL, ran timestamptz NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	name := "s" + strings.ToLower(watermill.NewShortUUID()[:8])
	target := testenv.URL(t, broker)
	consumerURL := target
	switch broker {
	case testenv.Postgres:
		target = withParam(target, "schema", schema)
		consumerURL = target
	case testenv.MQTT:
		consumerURL = withParam(target, "client_id", name) // a durable session: the broker keeps what arrives while it reconnects
	}
	startConsumer(t, "--db", dbURL, "--schema", schema, "--bridge", consumerURL, "--name", name)
	due := engine.NewEvent[Order](name + ".due")

	// The scheduler processes: started before anything is due.
	appName := "sbsched_" + schema
	args := []string{"relay", "--db", withParam(dbURL, "application_name", appName), "--schema", schema,
		"--bridge", target, "--retention", "0"}
	relays := []*relayProcess{{t: t, args: args}, {t: t, args: args}}
	for _, r := range relays {
		r.start()
		t.Cleanup(r.kill)
	}

	// Schedule: event i due at t0 + i·spread/n, written in a random order
	// by 4 writers, 500 per transaction.
	producer, err := engine.New(engine.Config{Logger: discard()}) // writes to the outbox only
	if err != nil {
		t.Fatal(err)
	}
	if err := producer.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = producer.Stop(context.Background()) })
	t0 := time.Now().Add(8 * time.Second)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * spread / time.Duration(n)) }
	order := rand.Perm(n)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for start := w * 500; start < n; start += 4 * 500 {
				if err := scheduleBatch(engine.WithEngine(t.Context(), producer), db, schema, due, order[start:min(start+500, n)], at); err != nil {
					t.Errorf("scheduling: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if late := time.Since(t0); late > 0 {
		t.Fatalf("scheduling %d events took until %s after the first was due: too slow a machine for this test", n, late)
	}
	t.Logf("%s: %d events scheduled, the first due in %s", broker, n, time.Until(t0).Round(time.Millisecond))

	// Faults: the leader SIGKILLed at a tenth and four tenths of the due
	// times (the other process takes over; the killed one restarts), the
	// broker restarted at seven tenths for 1 s.
	var windows []window
	killLeader := func() {
		var leader string
		if err := db.QueryRow(`SELECT holder FROM ` + q("outbox_leader")).Scan(&leader); err != nil {
			t.Errorf("reading the leader: %v", err)
		}
		windows = append(windows, window{time.Now(), time.Now().Add(killWindow)})
		// The holder names the relay's host and pid (host/pid/random).
		killed := false
		for _, r := range relays {
			if pid := r.pid(); pid != 0 && strings.Contains(leader, fmt.Sprintf("/%d/", pid)) {
				r.kill()
				r.start()
				killed = true
			}
		}
		if !killed {
			t.Errorf("no relay process holds the lease %q", leader)
		}
	}
	sleepUntil(t0.Add(spread / 10))
	killLeader()
	sleepUntil(t0.Add(4 * spread / 10))
	killLeader()
	sleepUntil(t0.Add(7 * spread / 10))
	outageAt := time.Now()
	restore := testenv.Outage(t, broker)
	time.Sleep(outageLength)
	restore()
	windows = append(windows, window{outageAt.Add(-outageBefore), outageAt.Add(outageWindow)})

	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		got := rows(t, db, `SELECT count(DISTINCT id) FROM `+q("effects"))
		if got >= n {
			break
		}
		if time.Now().After(deadline) {
			st, err := outbox.ReadStats(t.Context(), db, schema)
			t.Fatalf("after 2 minutes, %d events of %d have an effect; the outbox: %+v (%v)", got, n, st, err)
		}
	}
	time.Sleep(time.Second) // a late duplicate would show now
	total := rows(t, db, `SELECT count(*) FROM `+q("effects"))
	distinct := rows(t, db, `SELECT count(DISTINCT id) FROM `+q("effects"))
	if distinct != n {
		t.Errorf("delivered: %d distinct events, want %d", distinct, n)
	}
	if total != distinct {
		t.Errorf("exactly once: %d effects for %d events", total, distinct)
	}
	var (
		all, outside []time.Duration
		early        int
	)
	rs, err := db.Query(`SELECT id, due, ran FROM ` + q("effects"))
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	for rs.Next() {
		var (
			id       int
			due, ran time.Time
		)
		if err := rs.Scan(&id, &due, &ran); err != nil {
			t.Fatal(err)
		}
		if want := at(id); !due.Equal(want.Truncate(time.Microsecond)) && due.Sub(want).Abs() > time.Microsecond {
			t.Errorf("event %d: Meta.ScheduledFor %s, want %s", id, due, want)
		}
		late := ran.Sub(due)
		if late < -time.Millisecond {
			early++
		}
		all = append(all, late)
		if !slices.ContainsFunc(windows, func(w window) bool { return !due.Before(w.from) && due.Before(w.to) }) {
			outside = append(outside, late)
		}
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	if early > 0 {
		t.Errorf("%d events ran before they were due", early)
	}
	slices.Sort(all)
	slices.Sort(outside)
	t.Logf("%s: %d events, %d effects; lateness all: %s; outside the fault windows (%d events): %s",
		broker, n, total, distribution(all), len(outside), distribution(outside))
	if len(outside) < n/10 {
		t.Fatalf("only %d events due outside the fault windows", len(outside))
	}
	if p50 := outside[len(outside)/2]; p50 > maxLateP50 {
		t.Errorf("lateness p50 outside the fault windows = %s, want <= %s; events more than 100ms late by due time (seconds after the first), faults at %s:\n%s",
			p50, maxLateP50, faultTimes(windows, t0), lateByDue(db, q("effects"), t0))
	}
}

// scheduleBatch schedules the events ids in one transaction.
func scheduleBatch(ctx context.Context, db *sql.DB, schema string, ev *engine.Event[Order], ids []int, at func(int) time.Time) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	tctx := outbox.WithTx(ctx, tx, schema)
	for _, id := range ids {
		if _, err := ev.Schedule(tctx, at(id), Order{ID: id}); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func distribution(d []time.Duration) string {
	if len(d) == 0 {
		return "none"
	}
	p := func(q float64) time.Duration {
		return d[min(len(d)-1, int(q*float64(len(d))))].Round(100 * time.Microsecond)
	}
	return fmt.Sprintf("min %s p50 %s p90 %s p99 %s max %s", p(0), p(0.5), p(0.9), p(0.99), d[len(d)-1].Round(time.Millisecond))
}

func sleepUntil(t time.Time) { time.Sleep(time.Until(t)) }

var (
	consumerOnce sync.Once
	consumerBin  string
	consumerErr  error
)

// startConsumer builds testdata/schedconsumer once per test run (without
// the race detector) and runs it with args until the test ends; it returns
// once the consumer consumes.
func startConsumer(t *testing.T, args ...string) {
	t.Helper()
	consumerOnce.Do(func() {
		dir, err := os.MkdirTemp("", "switchboard-schedconsumer-")
		if err != nil {
			consumerErr = err
			return
		}
		consumerBin = filepath.Join(dir, "schedconsumer")
		if out, err := exec.Command("go", "build", "-o", consumerBin, "./testdata/schedconsumer").CombinedOutput(); err != nil {
			consumerErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if consumerErr != nil {
		t.Fatal(consumerErr)
	}
	cmd := exec.Command(consumerBin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(40 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if stderr.Len() > 0 {
			t.Logf("consumer's errors:\n%s", stderr.String())
		}
	})
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- line == "ready\n"
		_, _ = io.Copy(io.Discard, out)
		_ = cmd.Wait()
		close(exited)
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("the consumer did not start: %s", stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the consumer did not start within 30s")
	}
}

// pid is the process's id, 0 when it is not running.
func (r *relayProcess) pid() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return 0
	}
	return r.cmd.Process.Pid
}

// On the in-process bus with outbox.Scheduler, what is scheduled survives
// the application: the engine that scheduled stops before anything is due
// (as a process restarting would), a new one delivers every event once.
func TestScheduledSurvivesARestartInProcess(t *testing.T) {
	dbURL, _, schema := setup(t)
	name := "r" + strings.ToLower(watermill.NewShortUUID()[:8])
	due := engine.NewEvent[Order](name + ".due")
	newApp := func(deliver func(Order, engine.Meta)) *engine.Engine {
		t.Helper()
		svc := engine.NewService(name, "1")
		engine.Subscribe(svc, due, func(ctx context.Context, o Order) error { deliver(o, engine.MetaFrom(ctx)); return nil })
		sched := &outbox.Scheduler{DatabaseURL: dbURL, Schema: schema, Logger: discard()}
		t.Cleanup(func() { _ = sched.Close() })
		e, err := engine.New(engine.Config{Logger: discard(), Scheduler: sched})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Register(svc); err != nil {
			t.Fatal(err)
		}
		if err := e.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.Stop(context.Background()) })
		return e
	}
	var early atomic.Int64
	first := newApp(func(Order, engine.Meta) { early.Add(1) })
	at := time.Now().Add(2 * time.Second)
	const n = 100
	ids := map[string]bool{}
	for i := range n {
		id, err := due.Schedule(engine.WithEngine(t.Context(), first), at, Order{ID: i})
		if err != nil {
			t.Fatal(err)
		}
		ids[id] = true
	}
	if err := first.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if early.Load() != 0 {
		t.Fatalf("%d events delivered before they were due", early.Load())
	}
	var (
		mu   sync.Mutex
		seen = map[int]int{}
	)
	newApp(func(o Order, m engine.Meta) {
		mu.Lock()
		defer mu.Unlock()
		seen[o.ID]++
		if !ids[m.MessageID] {
			t.Errorf("event %d arrived with id %s, not the schedule id Schedule returned", o.ID, m.MessageID)
		}
		if time.Now().Before(at) {
			t.Errorf("event %d arrived before it was due", o.ID)
		}
	})
	waitFor(t, 30*time.Second, fmt.Sprintf("%d events", n), func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == n })
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for id, c := range seen {
		if c != 1 {
			t.Errorf("event %d delivered %d times", id, c)
		}
	}
}

// window is a fault's window, by due time.
type window struct{ from, to time.Time }

// faultTimes lists the fault windows in seconds after t0.
func faultTimes(ws []window, t0 time.Time) string {
	var b strings.Builder
	for _, w := range ws {
		fmt.Fprintf(&b, "[%.1f, %.1f) ", w.from.Sub(t0).Seconds(), w.to.Sub(t0).Seconds())
	}
	return b.String()
}

// lateByDue counts the events more than 100 ms late per half second of
// due time after t0.
func lateByDue(db *sql.DB, effects string, t0 time.Time) string {
	rs, err := db.Query(`SELECT floor(extract(epoch FROM due - $1) * 2) / 2, count(*), max(ran - due)::text FROM `+effects+`
		WHERE ran - due > interval '100 ms' GROUP BY 1 ORDER BY 1`, t0)
	if err != nil {
		return err.Error()
	}
	defer rs.Close()
	var b strings.Builder
	for rs.Next() {
		var (
			at      float64
			n       int
			maxLate string
		)
		if err := rs.Scan(&at, &n, &maxLate); err != nil {
			return err.Error()
		}
		fmt.Fprintf(&b, "  %.1fs: %d (max %s)\n", at, n, maxLate)
	}
	return b.String()
}

// Tick is the payload of TestEveryOnceAcrossEngines' recurring event.
type Tick struct {
	N int `json:"n"`
}

// A recurring schedule declared with engine.Every by a service that three
// engines run, each with an outbox.Scheduler on one schema, over NATS:
// each tick is handled once, and stopping two of the engines (whichever
// leads) leaves the ticks going, each still once.
func TestEveryOnceAcrossEngines(t *testing.T) {
	dbURL, _, schema := setup(t)
	url := testenv.URL(t, testenv.NATS)
	name := "e" + strings.ToLower(watermill.NewShortUUID()[:8])
	tick := engine.NewEvent[Tick](name + ".tick")
	var (
		mu   sync.Mutex
		seen = map[time.Time]int{} // by tick
	)
	newEngine := func() *engine.Engine {
		t.Helper()
		svc := engine.NewService(name, "1")
		engine.Every(svc, "every-second", "*/1 * * * * *", tick, Tick{N: 1})
		engine.Subscribe(svc, tick, func(ctx context.Context, _ Tick) error {
			mu.Lock()
			defer mu.Unlock()
			seen[engine.MetaFrom(ctx).ScheduledFor]++
			return nil
		})
		sched := &outbox.Scheduler{DatabaseURL: dbURL, Schema: schema, Logger: discard()}
		t.Cleanup(func() { _ = sched.Close() })
		e, err := engine.New(engine.Config{Bridge: url, Scheduler: sched, Logger: discard()})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Register(svc); err != nil {
			t.Fatal(err)
		}
		if err := e.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.Stop(context.Background()) })
		return e
	}
	engines := []*engine.Engine{newEngine(), newEngine(), newEngine()}
	ticks := func() (n int, last time.Time) {
		mu.Lock()
		defer mu.Unlock()
		for at, c := range seen {
			if c != 1 {
				t.Errorf("tick %s handled %d times", at.Format(time.RFC3339Nano), c)
			}
			if at.After(last) {
				last = at
			}
		}
		return len(seen), last
	}
	time.Sleep(3500 * time.Millisecond)
	for i := range 2 { // the first two stop; the third goes on
		if err := engines[i].Stop(t.Context()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3500 * time.Millisecond)
	}
	stopped := time.Now().Add(-3500 * time.Millisecond)
	n, last := ticks()
	if n < 6 {
		t.Errorf("%d ticks in 10.5 s with three, then two, then one engine running; want at least 6", n)
	}
	if !last.After(stopped) {
		t.Errorf("last tick at %s: none after the second engine stopped (%s)", last.Format(time.RFC3339Nano), stopped.Format(time.RFC3339Nano))
	}
	t.Logf("%d ticks, each handled once; last at %s", n, last.Format(time.StampMilli))
}
