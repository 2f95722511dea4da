package outbox_test

import (
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/outbox"
)

// freezer is a TCP proxy on 127.0.0.1 that can stop forwarding bytes, in
// both directions and on every connection, without closing anything: to
// both ends the peer looks alive and silent, like a network path that
// drops everything.
type freezer struct {
	ln       net.Listener
	upstream string

	mu     sync.Mutex
	frozen bool
	thaw   chan struct{} // closed when unfrozen
	conns  []net.Conn
}

func newFreezer(t *testing.T, upstream string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, upstream: upstream, thaw: make(chan struct{})}
	close(f.thaw)
	go f.accept()
	t.Cleanup(f.close)
	return f
}

func (f *freezer) accept() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", f.upstream)
		if err != nil {
			_ = c.Close()
			continue
		}
		f.mu.Lock()
		f.conns = append(f.conns, c, u)
		f.mu.Unlock()
		go f.pipe(c, u)
		go f.pipe(u, c)
	}
}

// pipe copies from src to dst, holding each chunk while frozen.
func (f *freezer) pipe(src, dst net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			f.mu.Lock()
			thaw := f.thaw
			f.mu.Unlock()
			<-thaw
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				_ = dst.Close()
			} else if tc, ok := dst.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
			return
		}
	}
}

func (f *freezer) freeze(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if on == f.frozen {
		return
	}
	f.frozen = on
	if on {
		f.thaw = make(chan struct{})
	} else {
		close(f.thaw)
	}
}

func (f *freezer) close() {
	f.freeze(false)
	_ = f.ln.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		_ = c.Close()
	}
}

// A leader whose path to PostgreSQL freezes (no RST, no FIN: the server
// still sees a live connection) loses leadership within the documented
// bound with the default settings; the standby forwards, and the frozen
// relay forwards nothing more, even after its path thaws.
func TestFrozenLeaderLosesLeadership(t *testing.T) {
	direct, db, schema := setup(t)
	u, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newFreezer(t, u.Host)
	u.Host = proxy.ln.Addr().String()
	viaProxy := u.String()

	// Each relay forwards to its own bus, so the test sees who forwarded.
	busA, busB := inproc.New(), inproc.New()
	gotA, gotB := collect(t, busA, "event.orders.placed", "g"), collect(t, busB, "event.orders.placed", "g")
	e := newEngine(t, inproc.New())
	logA, logB := &testenv.LogBuffer{}, &testenv.LogBuffer{}
	runRelay(t, outbox.Relay{DatabaseURL: viaProxy, Schema: schema, Target: busA, Retention: -1, Logger: slog.New(slog.NewTextHandler(logA, nil))})
	waitFor(t, 10*time.Second, "relay A to lead", func() bool { return strings.Contains(logA.String(), "leading") })
	runRelay(t, outbox.Relay{DatabaseURL: direct, Schema: schema, Target: busB, Retention: -1, Logger: slog.New(slog.NewTextHandler(logB, nil))})
	emitOrders(t, e, db, schema, 0, 10)
	waitFor(t, 10*time.Second, "A to forward the first orders", func() bool { return len(gotA.snapshot()) == 10 })
	// Marked forwarded before the freeze: else B forwards them again, as it should.
	waitForStats(t, db, schema, 10*time.Second, "A to mark the first orders forwarded", func(s outbox.Stats) bool { return s.Backlog == 0 })

	proxy.freeze(true)
	frozenAt := time.Now()
	emitOrders(t, e, db, schema, 10, 20)
	waitFor(t, outbox.MaxTakeover+5*time.Second, "the standby to forward the orders written after the freeze", func() bool {
		return len(gotB.snapshot()) == 10
	})
	took := time.Since(frozenAt)
	t.Logf("standby forwarded %s after the freeze (documented bound %s)", took.Round(100*time.Millisecond), outbox.MaxTakeover)
	if took > outbox.MaxTakeover {
		t.Errorf("takeover took %s, more than the documented %s", took, outbox.MaxTakeover)
	}
	if outbox.MaxTakeover > 30*time.Second {
		t.Errorf("documented bound %s is over 30 s", outbox.MaxTakeover)
	}
	waitFor(t, outbox.MaxTakeover, "A to notice it lost leadership", func() bool {
		return strings.Contains(logA.String(), "session ended")
	})

	proxy.freeze(false) // A may reconnect now, but B holds the lease
	emitOrders(t, e, db, schema, 20, 30)
	waitFor(t, 10*time.Second, "B to forward the orders written after the thaw", func() bool { return len(gotB.snapshot()) == 20 })
	time.Sleep(2 * time.Second)
	if n := len(gotA.snapshot()); n != 10 {
		t.Errorf("the frozen relay forwarded %d messages after the freeze", n-10)
	}
	for i, id := range gotB.snapshot() {
		if id != 10+i {
			t.Fatalf("B forwarded %v, want 10..29 in order", gotB.snapshot())
		}
	}
}

// A leader whose session ends (its process killed, its connection cut) is
// replaced at once, not when its lease expires: the server knows the
// session is gone.
func TestStandbyTakesOverWhenLeaderSessionEnds(t *testing.T) {
	direct, db, schema := setup(t)
	u, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	app := "leadertest_" + schema
	q := u.Query()
	q.Set("application_name", app)
	u.RawQuery = q.Encode()

	busA, busB := inproc.New(), inproc.New()
	gotA, gotB := collect(t, busA, "event.orders.placed", "g"), collect(t, busB, "event.orders.placed", "g")
	e := newEngine(t, inproc.New())
	logA := &testenv.LogBuffer{}
	const ttl = 10 * time.Minute // expiry cannot be what hands over
	stopA := runRelay(t, outbox.Relay{DatabaseURL: u.String(), Schema: schema, Target: busA, Retention: -1, LeaseTTL: ttl,
		LeaderPoll: 5 * time.Minute, Logger: slog.New(slog.NewTextHandler(logA, nil))}) // A stays away once cut
	waitFor(t, 10*time.Second, "relay A to lead", func() bool { return strings.Contains(logA.String(), "leading") })
	runRelay(t, outbox.Relay{DatabaseURL: direct, Schema: schema, Target: busB, Retention: -1, LeaseTTL: ttl, LeaderPoll: 100 * time.Millisecond, Logger: discard()})
	emitOrders(t, e, db, schema, 0, 5)
	waitFor(t, 10*time.Second, "A to forward", func() bool { return len(gotA.snapshot()) == 5 })
	// Marked forwarded before A's session ends: else B forwards them again, as it should.
	waitForStats(t, db, schema, 10*time.Second, "A to mark its orders forwarded", func(s outbox.Stats) bool { return s.Backlog == 0 })

	if n := rows(t, db, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, app); n != 1 {
		t.Fatalf("terminated %d sessions of A, want 1", n)
	}
	emitOrders(t, e, db, schema, 5, 10)
	waitFor(t, 20*time.Second, "B to forward the orders written after A's session ended", func() bool { return len(gotB.snapshot()) == 5 })
	stopA()
	if n := len(gotA.snapshot()); n != 5 {
		t.Errorf("A forwarded %d messages after its session ended", n-5)
	}
}
