// Package examples_test proves that the four deployment models run the
// same service code (examples/services). It builds every example main,
// runs each as an OS process, drives the seed's scenario through it —
// createUser calls the email service's sendWelcome and emits user.created,
// which the email service consumes — and asserts the result; then it sends
// SIGTERM during a burst of requests and checks that in-flight requests
// complete, new ones are refused cleanly, nothing is lost, and the process
// exits 0 within the drain deadline.
//
// The broker-backed runs (monolith -serve on NATS, microservices, edge)
// each get a private nats-server (JetStream, a temporary store, a free port
// on 127.0.0.1): the shared test broker also carries examples/microservices'
// run of the same services, and a service's processes compete for its
// commands, so a test asserting what one process stored needs a broker of
// its own. The edge's broker is also stopped and restarted, as a leaf node
// loses and regains its uplink.
//
// Measured and logged (go test -v), never asserted: the serverless cold
// start (exec to the first served command), the edge's idle RSS, and the
// latency of one HTTP command round trip (p50 of 200 sequential requests).
package examples_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"go.uber.org/goleak"

	_ "github.com/switchboard-go/switchboard/bridge/nats"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/examples/internal/app"
	"github.com/switchboard-go/switchboard/examples/internal/scenario"
	"github.com/switchboard-go/switchboard/examples/services/email/emailapi"
	"github.com/switchboard-go/switchboard/examples/services/user/userapi"
	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/services/health"
	"github.com/switchboard-go/switchboard/services/httpgateway"
)

var bin string // folder of the built example binaries

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "switchboard-deploy-")
	if err != nil {
		panic(err)
	}
	bin = dir
	build := exec.Command("go", "build", "-o", dir+string(os.PathSeparator),
		"./monolith", "./microservices/user", "./microservices/email", "./serverless", "./edge")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the examples:", err)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		_ = os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// drainDeadline bounds a process's exit after SIGTERM, beyond its drain
// delay: the HTTP and engine drains, and slack.
const drainDeadline = engine.DefaultDrainTimeout + 5*time.Second

// serverlessDrainDelay is the serverless process's $DRAIN_DELAY: every
// client of the burst must see its 503 before the listener closes, even on
// a loaded machine.
const serverlessDrainDelay = 3 * time.Second

// The seed's trace context, as a caller at the edge would send it.
const traceparent = scenario.Traceparent

func TestMonolith(t *testing.T) {
	// The demo: the scenario in one process on the in-process bridge; it
	// exits by itself.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	demo := exec.CommandContext(ctx, filepath.Join(bin, "monolith"))
	demo.Env = environ("SWITCHBOARD_BRIDGE=")
	out, err := demo.CombinedOutput()
	if err != nil {
		t.Fatalf("monolith: %v\n%s", err, out)
	}
	for _, want := range []string{"created Ada <ada@example.com> as u1", "duplicate rejected: 409",
		`e-mail to ada@example.com: "Welcome, Ada"`, `e-mail to ada@example.com: "Getting started"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("monolith output lacks %q:\n%s", want, out)
		}
	}

	// -serve on a broker: the same process keeps serving callers over NATS
	// until SIGTERM, which it handles while a burst of calls is in flight.
	nats := startNATS(t)
	p := start(t, "monolith", "serving; Ctrl-C to stop", []string{"SWITCHBOARD_BRIDGE=" + nats.url}, "-serve")
	eng := caller(t, nats.url)
	scenario.Bus(t, eng)
	busBurst(t, eng, p)
	p.waitExit(t)
}

func TestMicroservices(t *testing.T) {
	nats := startNATS(t)
	mail := start(t, "email", "ready", []string{"SWITCHBOARD_BRIDGE=" + nats.url})
	users := start(t, "user", "ready", []string{"SWITCHBOARD_BRIDGE=" + nats.url, "PORT=0"}) // with health endpoints
	checkReady(t, users.addr, "nats", "user.v1")
	eng := caller(t, nats.url)
	scenario.Bus(t, eng)

	// SIGTERM the user service during a burst; the email service stays up
	// and must have sent both e-mails for every user created: no call the
	// user service answered lost its effects.
	created := busBurst(t, eng, users, func() { expectNotReady(t, users) })
	users.waitExit(t)
	want := map[string]int{}
	for _, u := range created {
		want[u.Email] = 0
	}
	deadline := time.Now().Add(20 * time.Second)
	addrs := slices.Collect(maps.Keys(want))
	for {
		for k := range want {
			want[k] = 0
		}
		// A few hundred addresses at a time: a faster burst creates
		// thousands of users, and one reply listing all their e-mails
		// would exceed the engine's payload limit.
		for chunk := range slices.Chunk(addrs, 300) {
			sent, err := emailapi.ListSent.Invoke(engine.WithEngine(t.Context(), eng), emailapi.ListSentIn{To: chunk})
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range sent.Sent {
				if _, ok := want[s.To]; ok {
					want[s.To]++
				}
			}
		}
		missing := 0
		for _, n := range want {
			if n < 2 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d users created during the burst lack their welcome or getting-started e-mail", missing, len(want))
		}
		time.Sleep(100 * time.Millisecond)
	}
	mail.terminate(t)
	mail.waitExit(t)
}

func TestServerless(t *testing.T) {
	p := start(t, "serverless", "ready", []string{"PORT=0", "API_TOKEN=test-token", "DRAIN_DELAY=" + serverlessDrainDelay.String()})
	c := newClient(p.addr)

	// Cold start: exec to the first command served.
	st, _, body := c.do(t, "POST", "/users", `{"name":"Cold","email":"cold@example.com"}`)
	firstServed := time.Since(p.started)
	if st != http.StatusCreated {
		t.Fatalf("first request: %d %s", st, body)
	}
	t.Logf("serverless cold start: exec → ready %s, exec → first served command %s", p.ready.Sub(p.started).Round(time.Microsecond), firstServed.Round(time.Microsecond))
	ids := []string{decodeUser(t, body).ID}

	// The seed's scenario over HTTP.
	corr := "corr-" + watermill.NewShortUUID()
	address := "ada-" + strings.ToLower(watermill.NewShortUUID()[:6]) + "@example.com"
	st, h, body := c.do(t, "POST", "/users", `{"name":"Ada","email":"`+address+`"}`, "X-Correlation-Id", corr, "traceparent", traceparent)
	if st != http.StatusCreated || h.Get("X-Correlation-Id") != corr || h.Get("traceparent") != traceparent {
		t.Fatalf("createUser: %d %v %s", st, h, body)
	}
	ada := decodeUser(t, body)
	ids = append(ids, ada.ID)
	if st, _, body := c.do(t, "GET", "/users/"+ada.ID, ""); st != http.StatusUnauthorized || problem(t, body).Status != 401 {
		t.Errorf("getUser without a token: %d %s", st, body)
	}
	if st, _, body := c.do(t, "GET", "/users/"+ada.ID, "", "Authorization", "Bearer test-token"); st != http.StatusOK || decodeUser(t, body) != ada {
		t.Errorf("getUser: %d %s", st, body)
	}
	if st, _, body := c.do(t, "POST", "/users", `{"name":"Ada","email":"`+address+`"}`, "X-Correlation-Id", "dup-1"); st != http.StatusConflict || problem(t, body).CorrelationID != "dup-1" {
		t.Errorf("duplicate: %d %s", st, body)
	}
	if st, _, body := c.do(t, "POST", "/users", `{"name":"Bo","email":"no-at-sign"}`); st != http.StatusBadRequest || problem(t, body).Field != "email" {
		t.Errorf("invalid e-mail: %d %s", st, body)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		st, _, body := c.do(t, "GET", "/emails", "", "Authorization", "Bearer test-token")
		var sent emailapi.ListSentOut
		if st != http.StatusOK || json.Unmarshal(body, &sent) != nil {
			t.Fatalf("listSent: %d %s", st, body)
		}
		if scenario.Welcomed(t, sent.Sent, address, corr) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("e-mails to %s never all sent: %+v", address, sent.Sent)
		}
	}
	checkReady(t, p.addr, "gochannel", "user.v1")

	// The OpenAPI document validates and describes the three endpoints.
	st, _, doc := c.do(t, "GET", "/openapi.json", "")
	if st != http.StatusOK {
		t.Fatalf("/openapi.json: %d", st)
	}
	d, err := libopenapi.NewDocument(doc)
	if err != nil {
		t.Fatal(err)
	}
	v, errs := validator.NewValidator(d)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		t.Errorf("invalid OpenAPI document: %v", verrs)
	}
	for _, path := range []string{`"/users"`, `"/users/{id}"`, `"/emails"`} {
		if !strings.Contains(string(doc), path) {
			t.Errorf("the document lacks %s", path)
		}
	}

	// Latency of one HTTP command round trip (keep-alive, sequential).
	lat := make([]time.Duration, 200)
	for i := range lat {
		t0 := time.Now()
		if st, _, body := c.do(t, "GET", "/users/"+ada.ID, "", "Authorization", "Bearer test-token"); st != http.StatusOK {
			t.Fatalf("getUser: %d %s", st, body)
		}
		lat[i] = time.Since(t0)
	}
	slices.Sort(lat)
	t.Logf("HTTP command round trip (GET /users/{id}, %d sequential): p50 %s, p90 %s, p99 %s",
		len(lat), lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)*9/10].Round(time.Microsecond), lat[len(lat)*99/100].Round(time.Microsecond))

	// SIGTERM during a burst of 50 concurrent clients: each request is
	// answered 201 or, once draining, 503 problem; none is reset.
	const workers = 50
	var (
		mu        sync.Mutex
		burstIDs  []string
		afterTerm int
		refused   atomic.Int64
		term      atomic.Bool
		wg        sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			for n := 0; ; n++ {
				st, _, body, err := c.try("POST", "/users", fmt.Sprintf(`{"name":"Burst","email":"b%d-%d@example.com"}`, w, n))
				after := term.Load()
				switch {
				case err != nil:
					t.Errorf("worker %d: request %d failed (after SIGTERM: %v): %v", w, n, after, err)
					return
				case st == http.StatusCreated:
					u := decodeUser(t, body)
					mu.Lock()
					burstIDs = append(burstIDs, u.ID)
					if after {
						afterTerm++
					}
					mu.Unlock()
				case st == http.StatusServiceUnavailable && after && problem(t, body).Reason == "draining":
					refused.Add(1)
					return
				default:
					t.Errorf("worker %d: request %d answered %d (after SIGTERM: %v): %s", w, n, st, after, body)
					return
				}
			}
		})
	}
	waitFor(t, "200 users created by the burst", func() bool { mu.Lock(); defer mu.Unlock(); return len(burstIDs) >= 200 })
	term.Store(true)
	p.terminate(t)
	expectNotReady(t, p)
	wg.Wait()
	exitedAfter := p.waitExit(t)
	t.Logf("burst: %d users created (%d answered after SIGTERM), %d requests refused with 503 while draining; exited %s after SIGTERM",
		len(burstIDs), afterTerm, refused.Load(), exitedAfter.Round(time.Millisecond))
	if refused.Load() != workers {
		t.Errorf("%d workers were refused, want every one of the %d", refused.Load(), workers)
	}

	// Nothing lost: every user the store created was answered 201 to a
	// client (ids are dense), and the gateway answered exactly the requests
	// this test received answers to.
	ids = append(ids, burstIDs...)
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Errorf("user id %s answered twice", id)
		}
		seen[id] = true
	}
	for i := 1; i <= len(ids); i++ {
		if !seen["u"+strconv.Itoa(i)] {
			t.Errorf("user u%d was created but no client got it (ids %d)", i, len(ids))
		}
	}
	want := fmt.Sprintf("stopped: served=%d rejected=%d", c.served.Load(), c.rejected.Load())
	if !slices.Contains(p.lines(), want) {
		t.Errorf("the process's counters differ from the answers received: want %q in\n%s", want, strings.Join(p.lines(), "\n"))
	}
}

func TestEdge(t *testing.T) {
	nats := startNATS(t)
	p := start(t, "edge", "ready", []string{"SWITCHBOARD_BRIDGE=" + nats.url, "PORT=0"})
	t.Logf("edge: exec → ready %s", p.ready.Sub(p.started).Round(time.Microsecond))
	time.Sleep(time.Second) // let start-up garbage go
	size := int64(0)
	if fi, err := os.Stat(filepath.Join(bin, "edge")); err == nil {
		size = fi.Size()
	}
	t.Logf("edge idle RSS: %d KiB (binary %.1f MiB; serverless binary %.1f MiB)", p.rssKiB(t), float64(size)/(1<<20), float64(fileSize(filepath.Join(bin, "serverless")))/(1<<20))
	checkReady(t, p.addr, "nats", "email.v1")

	eng := caller(t, nats.url)
	scenario.Bus(t, eng)
	t.Logf("edge RSS after the scenario: %d KiB", p.rssKiB(t))

	// The local broker goes away: readiness says so (liveness does not),
	// and comes back with it.
	nats.stop(t)
	waitFor(t, "/readyz to fail while NATS is down", func() bool {
		st, body := getHealth(p.addr, "/readyz")
		return st == http.StatusServiceUnavailable && strings.Contains(body.Error, "nats") && body.State == "running"
	})
	if st, _ := getHealth(p.addr, "/healthz"); st != http.StatusOK {
		t.Errorf("/healthz while NATS is down: %d", st)
	}
	nats.start(t)
	waitFor(t, "/readyz to pass once NATS is back", func() bool { st, _ := getHealth(p.addr, "/readyz"); return st == http.StatusOK })
	waitFor(t, "a createUser through the restarted broker", func() bool {
		_, err := userapi.CreateUser.Invoke(engine.WithEngine(t.Context(), eng),
			userapi.CreateUserIn{Name: "Back", Email: "back-" + strings.ToLower(watermill.NewShortUUID()[:6]) + "@example.com"}, engine.CallTimeout(3*time.Second))
		return err == nil
	})

	busBurst(t, eng, p, func() { expectNotReady(t, p) })
	p.waitExit(t)
}

// ---------------------------------------------------------------- processes

// process is one running example binary.
type process struct {
	name    string
	delay   time.Duration // $DRAIN_DELAY
	cmd     *exec.Cmd
	started time.Time // just before exec
	ready   time.Time // when the ready line was read
	addr    string    // 127.0.0.1:<port> from "listening on", if any
	termAt  time.Time
	exitAt  time.Time
	waitErr error
	exited  chan struct{}
	mu      sync.Mutex
	out     []string
}

// environ is the test's environment without the variables the examples
// read, plus env.
func environ(env ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		switch name, _, _ := strings.Cut(kv, "="); name {
		case "PORT", "SWITCHBOARD_BRIDGE", "API_TOKEN", "DRAIN_DELAY":
			continue
		}
		out = append(out, kv)
	}
	return append(out, env...)
}

// start runs an example binary and waits until it prints readyLine.
func start(t *testing.T, name, readyLine string, env []string, args ...string) *process {
	t.Helper()
	p := &process{name: name, delay: app.DefaultDrainDelay, exited: make(chan struct{})}
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "DRAIN_DELAY="); ok {
			d, err := time.ParseDuration(v)
			if err != nil {
				t.Fatal(err)
			}
			p.delay = d
		}
	}
	p.cmd = exec.Command(filepath.Join(bin, name), args...)
	p.cmd.Env = environ(env...)
	p.cmd.Stderr = logWriter{t, name}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.out = append(p.out, line)
			if a, ok := strings.CutPrefix(line, "listening on "); ok {
				if _, port, err := net.SplitHostPort(a); err == nil {
					p.addr = "127.0.0.1:" + port
				}
			}
			if line == readyLine && p.ready.IsZero() {
				p.ready = time.Now()
				close(ready)
			}
			p.mu.Unlock()
		}
		p.waitErr = p.cmd.Wait()
		p.exitAt = time.Now()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	select {
	case <-ready:
	case <-p.exited:
		t.Fatalf("%s exited before it was ready: %v", name, p.waitErr)
	case <-time.After(30 * time.Second):
		t.Fatalf("%s not ready after 30 s", name)
	}
	return p
}

func (p *process) terminate(t *testing.T) {
	t.Helper()
	p.termAt = time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
}

// waitExit expects a clean exit within the drain deadline after SIGTERM
// and returns how long it took.
func (p *process) waitExit(t *testing.T) time.Duration {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(p.delay + drainDeadline):
		t.Fatalf("%s still running %s after SIGTERM", p.name, p.delay+drainDeadline)
	}
	if p.waitErr != nil {
		t.Errorf("%s exited with %v after SIGTERM", p.name, p.waitErr)
	}
	return p.exitAt.Sub(p.termAt)
}

func (p *process) lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.out)
}

// rssKiB reads the process's resident set size from /proc.
func (p *process) rssKiB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	t.Fatal("no VmRSS in /proc/<pid>/status")
	return 0
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

type logWriter struct {
	t    *testing.T
	name string
}

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Logf("[%s] %s", w.name, strings.TrimSpace(string(b)))
	return len(b), nil
}

// ---------------------------------------------------------------- NATS

// natsServer is a private nats-server with JetStream for one test.
type natsServer struct {
	url, bin string
	args     []string
	cmd      *exec.Cmd
	exited   chan struct{}
}

func startNATS(t *testing.T) *natsServer {
	t.Helper()
	path, err := exec.LookPath("nats-server")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nats-server"); serr != nil {
			t.Fatalf("nats-server is required (the test runs a private one) and is not installed.\nInstall it with: scripts/services.sh start nats")
		}
		path = "/usr/sbin/nats-server"
	}
	port := freePort(t)
	n := &natsServer{url: "nats://127.0.0.1:" + port, bin: path,
		args: []string{"-a", "127.0.0.1", "-p", port, "-js", "-sd", t.TempDir()}}
	n.start(t)
	t.Cleanup(func() { n.stop(t) })
	return n
}

func (n *natsServer) start(t *testing.T) {
	t.Helper()
	n.cmd = exec.Command(n.bin, n.args...)
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("starting nats-server: %v", err)
	}
	n.exited = make(chan struct{})
	go func() { _ = n.cmd.Wait(); close(n.exited) }()
	hostport := strings.TrimPrefix(n.url, "nats://")
	waitFor(t, "nats-server on "+hostport, func() bool { return testenv.Reachable(hostport, time.Second) == nil })
}

func (n *natsServer) stop(t *testing.T) {
	t.Helper()
	select {
	case <-n.exited:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(10 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.exited
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// ---------------------------------------------------------------- over the bus

// caller is an engine in the test process, calling the example's services
// over the broker like a third process would.
func caller(t *testing.T, url string) *engine.Engine {
	t.Helper()
	eng, err := engine.New(engine.Config{Bridge: url, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Stop(context.Background()) })
	return eng
}

// busBurst has 20 callers create users over the bus, sends p SIGTERM once
// 40 were created, runs during (if given) right after the signal, and
// checks every call: before the signal each must succeed; after it, each
// succeeds (in flight, or taken before the engine stopped) or fails with a
// timeout or a 503 — never with another error. It returns the users
// created.
func busBurst(t *testing.T, eng *engine.Engine, p *process, during ...func()) []userapi.User {
	t.Helper()
	const workers = 20
	var (
		mu                 sync.Mutex
		created            []userapi.User
		afterTerm, refused int
		term               atomic.Bool
		wg                 sync.WaitGroup
	)
	ctx := engine.WithEngine(t.Context(), eng)
	for w := range workers {
		wg.Go(func() {
			for n := 0; ; n++ {
				in := userapi.CreateUserIn{Name: "Burst", Email: fmt.Sprintf("b%d-%d-%s@example.com", w, n, strings.ToLower(watermill.NewShortUUID()[:4]))}
				u, err := userapi.CreateUser.Invoke(ctx, in, engine.CallTimeout(3*time.Second))
				after := term.Load()
				mu.Lock()
				switch {
				case err == nil:
					created = append(created, u)
					if after {
						afterTerm++
					}
					mu.Unlock()
					continue
				case !after:
					t.Errorf("worker %d, call %d, before SIGTERM: %v", w, n, err)
				case errors.Is(err, engine.ErrTimeout) || errors.Is(err, engine.ErrUnavailable):
					refused++
				default:
					t.Errorf("worker %d, call %d, after SIGTERM: want a timeout or a 503, got %v", w, n, err)
				}
				mu.Unlock()
				return
			}
		})
	}
	waitFor(t, "40 users created by the burst", func() bool { mu.Lock(); defer mu.Unlock(); return len(created) >= 40 })
	term.Store(true)
	p.terminate(t)
	for _, f := range during {
		f()
	}
	wg.Wait()
	ids := map[string]bool{}
	for _, u := range created {
		if ids[u.ID] {
			t.Errorf("user id %s created twice", u.ID)
		}
		ids[u.ID] = true
	}
	t.Logf("%s burst: %d users created (%d answered after SIGTERM), %d calls not taken (timeout or 503)", p.name, len(created), afterTerm, refused)
	return created
}

// ---------------------------------------------------------------- over HTTP

// client calls one process over HTTP and counts the answers the gateway
// gave: served, and refused while draining.
type client struct {
	base             string
	http             *http.Client
	served, rejected atomic.Int64
}

func newClient(addr string) *client {
	return &client{base: "http://" + addr, http: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 64},
	}}
}

// try sends a request; header holds name, value pairs.
func (c *client) try(method, path, body string, header ...string) (int, http.Header, []byte, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("reading the answer: %w", err)
	}
	var p httpgateway.Problem
	if resp.StatusCode == http.StatusServiceUnavailable && json.Unmarshal(b, &p) == nil && p.Reason == "draining" {
		c.rejected.Add(1)
	} else {
		c.served.Add(1)
	}
	return resp.StatusCode, resp.Header, b, nil
}

func (c *client) do(t *testing.T, method, path, body string, header ...string) (int, http.Header, []byte) {
	t.Helper()
	st, h, b, err := c.try(method, path, body, header...)
	if err != nil {
		t.Fatal(err)
	}
	return st, h, b
}

func decodeUser(t *testing.T, b []byte) userapi.User {
	t.Helper()
	var u userapi.User
	if err := json.Unmarshal(b, &u); err != nil || u.ID == "" {
		t.Errorf("not a user: %s (%v)", b, err)
	}
	return u
}

func problem(t *testing.T, b []byte) httpgateway.Problem {
	t.Helper()
	var p httpgateway.Problem
	if err := json.Unmarshal(b, &p); err != nil {
		t.Errorf("not a problem: %s (%v)", b, err)
	}
	return p
}

// ---------------------------------------------------------------- health

func getHealth(addr, path string) (int, health.Status) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, health.Status{Error: err.Error()}
	}
	defer resp.Body.Close()
	var st health.Status
	_ = json.NewDecoder(resp.Body).Decode(&st)
	return resp.StatusCode, st
}

// checkReady expects /readyz to pass on bridge, listing service, and
// /healthz to pass.
func checkReady(t *testing.T, addr, bridge, service string) {
	t.Helper()
	st, body := getHealth(addr, "/readyz")
	if st != http.StatusOK || body.Bridge != bridge || !slices.Contains(body.Services, service) {
		t.Errorf("/readyz: %d %+v, want 200 on %s with %s", st, body, bridge, service)
	}
	if st, body := getHealth(addr, "/healthz"); st != http.StatusOK || body.Status != "alive" {
		t.Errorf("/healthz: %d %+v", st, body)
	}
}

// expectNotReady expects /readyz to answer 503 "draining" shortly after
// SIGTERM, while the listener is still open.
func expectNotReady(t *testing.T, p *process) {
	t.Helper()
	deadline := p.termAt.Add(p.delay * 8 / 10)
	var last string
	for time.Now().Before(deadline) {
		st, body := getHealth(p.addr, "/readyz")
		if st == http.StatusServiceUnavailable && body.State == "draining" {
			return
		}
		last = fmt.Sprintf("%d %+v", st, body)
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("/readyz did not report draining after SIGTERM; last answer %s", last)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
