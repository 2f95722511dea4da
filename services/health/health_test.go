package health_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/inproc"
	_ "github.com/switchboard-go/switchboard/bridge/nats"
	_ "github.com/switchboard-go/switchboard/bridge/postgres"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/services/health"
)

type ping struct {
	N int `json:"n"`
}

var Ping = engine.NewCommand[ping, ping]("pinger", "1", "ping")

func pinger() *engine.Service {
	s := engine.NewService("pinger", "1")
	engine.Handle(s, Ping, func(ctx context.Context, in ping) (ping, error) { return in, nil })
	return s
}

// gated is the in-process bus, except that opening a subscription waits
// for the gate: an engine on it stays "starting" until the test opens it.
type gated struct {
	*inproc.Bus
	gate chan struct{}
}

func (g gated) Subscriber(ctx context.Context, spec bridge.Spec) (message.Subscriber, error) {
	<-g.gate
	return g.Bus.Subscriber(ctx, spec)
}

func get(t *testing.T, url string) (int, health.Status) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if ct, opt := resp.Header.Get("Content-Type"), resp.Header.Get("X-Content-Type-Options"); ct != "application/json" || opt != "nosniff" {
		t.Errorf("Content-Type %q, X-Content-Type-Options %q", ct, opt)
	}
	var st health.Status
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return resp.StatusCode, st
}

func serve(t *testing.T, chk http.Handler) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/healthz", chk)
	mux.Handle("/readyz", chk)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// Through the whole lifecycle: starting, running, draining, stopped.
func TestReadinessFollowsTheLifecycle(t *testing.T) {
	bus := gated{inproc.New(), make(chan struct{})}
	defer bus.Close()
	eng, err := engine.New(engine.Config{SharedBridge: bus, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	svc := pinger()
	if err := eng.Register(svc); err != nil {
		t.Fatal(err)
	}
	chk := health.New(health.Config{Engine: eng})
	url := serve(t, chk)

	check := func(path string, code int, state, status string) health.Status {
		t.Helper()
		got, st := get(t, url+path)
		if got != code || st.State != state || st.Status != status || st.Bridge != "gochannel" || strings.Join(st.Services, ",") != "pinger.v1" {
			t.Errorf("%s: %d %+v, want %d state %q status %q", path, got, st, code, state, status)
		}
		return st
	}
	check("/readyz", 503, "new", "unavailable")

	started := make(chan error, 1)
	go func() { started <- eng.Start(context.Background()) }()
	for eng.State() != engine.StateStarting {
		time.Sleep(time.Millisecond)
	}
	if st := check("/readyz", 503, "starting", "unavailable"); !strings.Contains(st.Error, "starting") {
		t.Errorf("error %q does not name the state", st.Error)
	}
	check("/healthz", 200, "starting", "alive")
	close(bus.gate)
	if err := <-started; err != nil {
		t.Fatal(err)
	}

	check("/readyz", 200, "running", "ready")
	check("/healthz", 200, "running", "alive")

	chk.Drain()
	check("/readyz", 503, "draining", "unavailable")
	check("/healthz", 200, "draining", "alive")
	if _, err := Ping.Invoke(engine.WithEngine(t.Context(), eng), ping{N: 1}); err != nil {
		t.Errorf("the engine still works while the checker drains: %v", err)
	}

	if err := eng.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	check("/readyz", 503, "stopped", "unavailable")
	check("/healthz", 200, "stopped", "alive")

	// HEAD works, other methods do not, other paths are 404.
	for method, want := range map[string]int{"HEAD": 503, "POST": http.StatusMethodNotAllowed} {
		req, _ := http.NewRequest(method, url+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		resp.Body.Close() // or its connection outlives the test
		if resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", method, resp.StatusCode, want)
		}
	}
	rec := httptest.NewRecorder()
	chk.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("/metrics: %d", rec.Code)
	}
}

// Readiness verifies the bridge, not just the process.
func TestReadinessFailsWhenTheBridgeIsDown(t *testing.T) {
	bus := inproc.New()
	eng, err := engine.New(engine.Config{SharedBridge: bus, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Register(pinger()); err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer eng.Stop(context.Background())
	url := serve(t, health.Handler(health.Config{Engine: eng}))
	if code, st := get(t, url+"/readyz"); code != 200 {
		t.Fatalf("before: %d %+v", code, st)
	}
	_ = bus.Close() // the connection to the backend is gone
	code, st := get(t, url+"/readyz")
	if code != 503 || st.State != "running" || st.Error != "bridge gochannel unreachable" || strings.Contains(st.Error, bridge.ErrClosed.Error()) {
		t.Errorf("bridge down: %d %+v", code, st)
	}
	if code, _ := get(t, url+"/healthz"); code != 200 {
		t.Errorf("liveness does not depend on the bridge: %d", code)
	}
}

// On a real broker, readiness asks the broker.
func TestReadinessOnNATS(t *testing.T) {
	eng, err := engine.New(engine.Config{Bridge: testenv.URL(t, testenv.NATS), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	url := serve(t, health.Handler(health.Config{Engine: eng, CheckTimeout: 5 * time.Second}))
	if code, st := get(t, url+"/readyz"); code != 200 || st.Bridge != "nats" {
		t.Errorf("%d %+v", code, st)
	}
	if err := eng.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code, st := get(t, url+"/readyz"); code != 503 || st.State != "stopped" {
		t.Errorf("after Stop: %d %+v", code, st)
	}
}

// /readyz is unauthenticated: a failing bridge's error (the database URL
// with user, host, port, database and parameters; the driver's message)
// goes to the log, the answer says only which component failed.
func TestReadinessHidesTheBridgeError(t *testing.T) {
	db := testenv.PostgresDB(t)
	schema := testenv.Schema(t, db)
	u, err := url.Parse(testenv.URL(t, testenv.Postgres))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("schema", schema)
	q.Set("application_name", "readyz-test")
	u.RawQuery = q.Encode()
	eng, err := engine.New(engine.Config{Bridge: u.String(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Register(pinger()); err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer eng.Stop(context.Background())
	// A probe deadline that has passed before the probe starts fails the
	// probe on the real server, as a database that does not answer would.
	logs := &testenv.LogBuffer{}
	url := serve(t, health.Handler(health.Config{Engine: eng, CheckTimeout: time.Nanosecond, Logger: slog.New(slog.NewTextHandler(logs, nil))}))
	resp, err := http.Get(url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	for _, leak := range []string{u.Hostname(), u.Port(), u.User.Username() + "@", strings.TrimPrefix(u.Path, "/"), schema, "readyz-test", "sslmode", "postgres at", "deadline"} {
		if strings.Contains(string(body), leak) {
			t.Errorf("/readyz names %q: %s", leak, body)
		}
	}
	var st health.Status
	if err := json.Unmarshal(body, &st); err != nil || st.Error != "bridge postgres unreachable" || st.Bridge != "postgres" {
		t.Errorf("want a generic reason naming the component: %s (%v)", body, err)
	}
	if !strings.Contains(logs.String(), u.Hostname()) || !strings.Contains(logs.String(), "deadline") {
		t.Errorf("the log lacks the probe's error:\n%s", logs)
	}
}

// Validate reports every problem at once; New refuses an invalid Config.
func TestConfigValidate(t *testing.T) {
	err := health.Config{CheckTimeout: -time.Second}.Validate()
	if err == nil || !strings.Contains(err.Error(), "Engine") || !strings.Contains(err.Error(), "CheckTimeout is negative") {
		t.Errorf("Validate: %v, want both problems", err)
	}
	eng, err := engine.New(engine.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // closes the in-process bus New opened
		if err := eng.Stop(context.Background()); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	if err := (health.Config{Engine: eng}).Validate(); err != nil {
		t.Errorf("the zero value of every other field is valid: %v", err)
	}
	defer func() {
		if v := recover(); v == nil || !strings.Contains(v.(string), "Engine") {
			t.Errorf("New with no engine: recovered %v", v)
		}
	}()
	health.New(health.Config{})
}
