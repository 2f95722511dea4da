package httpgateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/envelope"
	"github.com/switchboard-go/switchboard/middleware"
	"github.com/switchboard-go/switchboard/services/httpgateway"
)

// The test service: every command the gateway tests need.

type EchoIn struct {
	ID    string   `json:"id,omitempty"`
	Name  string   `json:"name"`
	Limit int      `json:"limit,omitempty"`
	Tags  []string `json:"tags,omitempty"`
	Note  *string  `json:"note,omitempty"`
}

func (in EchoIn) Validate() error {
	if in.Name == "bad" {
		return engine.Invalid("name", "must not be bad")
	}
	return nil
}

// EchoOut is what the handler saw.
type EchoOut struct {
	In            EchoIn `json:"in"`
	Principal     string `json:"principal"`
	Tenant        string `json:"tenant"`
	CorrelationID string `json:"correlationId"`
	Traceparent   string `json:"traceparent"`
}

type FindIn struct {
	ID      string `json:"id"`
	Verbose bool   `json:"verbose,omitempty"`
	Page    uint   `json:"page,omitempty"`
}

type FailIn struct {
	Code    int    `json:"code"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

type SlowIn struct {
	Millis int `json:"millis"`
}

type Empty struct{}

var (
	Echo  = engine.NewCommand[EchoIn, EchoOut]("acct", "1", "echo")
	Find  = engine.NewCommand[FindIn, EchoOut]("acct", "1", "find")
	Fail  = engine.NewCommand[FailIn, Empty]("acct", "1", "fail")
	Slow  = engine.NewCommand[SlowIn, Empty]("acct", "1", "slow")
	Ghost = engine.NewCommand[Empty, Empty]("ghost", "1", "boo")       // nobody handles it
	List  = engine.NewCommand[[]string, []string]("acct", "1", "list") // not a struct: the body is the input
)

func acctService() *engine.Service {
	svc := engine.NewService("acct", "1")
	seen := func(ctx context.Context, in EchoIn) EchoOut {
		m := engine.MetaFrom(ctx)
		return EchoOut{In: in, Principal: m.PrincipalID, Tenant: m.TenantID, CorrelationID: m.CorrelationID, Traceparent: m.Traceparent}
	}
	engine.Handle(svc, Echo, func(ctx context.Context, in EchoIn) (EchoOut, error) { return seen(ctx, in), nil })
	engine.Handle(svc, Find, func(ctx context.Context, in FindIn) (EchoOut, error) {
		if in.ID == "nobody" {
			return EchoOut{}, engine.NewError(http.StatusNotFound, "no account %q", in.ID)
		}
		out := seen(ctx, EchoIn{ID: in.ID, Limit: int(in.Page)})
		if in.Verbose {
			out.In.Name = "verbose"
		}
		return out, nil
	})
	engine.Handle(svc, Fail, func(ctx context.Context, in FailIn) (Empty, error) {
		switch in.Code {
		case 0:
			panic("secret panic value")
		case 500:
			return Empty{}, errors.New("secret database password leaked")
		case 400:
			return Empty{}, engine.Invalid("code", "is odd")
		default:
			msg := "failed on purpose"
			if in.Message != "" {
				msg = in.Message
			}
			return Empty{}, &engine.Error{Code: in.Code, Reason: in.Reason, Message: msg, Details: map[string]any{"hint": "x"}}
		}
	})
	engine.Handle(svc, List, func(ctx context.Context, in []string) ([]string, error) { return in, nil })
	engine.Handle(svc, Slow, func(ctx context.Context, in SlowIn) (Empty, error) {
		select {
		case <-time.After(time.Duration(in.Millis) * time.Millisecond):
			return Empty{}, nil
		case <-ctx.Done():
			// As a handler should: out of time is an error. (A success
			// returned at the deadline raced the caller's own timer: on the
			// in-process direct road the reply could win.)
			return Empty{}, ctx.Err()
		}
	})
	return svc
}

// newEngine runs the test service on a private in-process bus.
func newEngine(t *testing.T) *engine.Engine {
	t.Helper()
	return newEngineWith(t, engine.Config{})
}

// newEngineWith is newEngine with cfg's other settings.
func newEngineWith(t *testing.T, cfg engine.Config) *engine.Engine {
	t.Helper()
	bus := inproc.New()
	cfg.SharedBridge = bus
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.Reliability.CallBreaker = middleware.BreakerPolicy{Disabled: true}
	eng, err := engine.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Register(acctService()); err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = eng.Stop(context.Background())
		_ = bus.Close()
	})
	return eng
}

const token = "s3cret"

// newGateway returns a served gateway with the test routes.
func newGateway(t *testing.T, eng *engine.Engine, cfg httpgateway.Config) (*httpgateway.Gateway, *httptest.Server) {
	t.Helper()
	cfg.Engine = eng
	if cfg.Authenticator == nil {
		cfg.Authenticator = httpgateway.BearerTokens(map[string]httpgateway.Identity{token: {Principal: "ada", Tenant: "acme"}})
	}
	cfg.Logger = slog.New(slog.DiscardHandler)
	gw := httpgateway.New(cfg)
	routes(gw)
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	return gw, srv
}

func routes(gw *httpgateway.Gateway) {
	httpgateway.Route(gw, http.MethodPost, "/accounts/{id}/items", Echo, httpgateway.Query("limit", "tags"), httpgateway.Status(http.StatusCreated))
	httpgateway.Route(gw, http.MethodPost, "/public/echo", Echo, httpgateway.Public())
	httpgateway.Route(gw, http.MethodGet, "/accounts/{id}", Find)
	httpgateway.Route(gw, http.MethodPost, "/fail", Fail, httpgateway.Public())
	httpgateway.Route(gw, http.MethodPost, "/slow", Slow, httpgateway.Public(), httpgateway.CallTimeout(300*time.Millisecond))
	httpgateway.Route(gw, http.MethodPost, "/ghost", Ghost, httpgateway.Public())
	httpgateway.Route(gw, http.MethodPost, "/list", List, httpgateway.Public())
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) problem(t *testing.T) httpgateway.Problem {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != httpgateway.ProblemContentType {
		t.Fatalf("Content-Type %q, want %q; body %s", ct, httpgateway.ProblemContentType, r.body)
	}
	var p httpgateway.Problem
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("problem body %s: %v", r.body, err)
	}
	if p.Status != r.status || p.Title != http.StatusText(r.status) || p.Type == "" {
		t.Errorf("problem %+v does not match status %d", p, r.status)
	}
	if p.CorrelationID == "" || p.CorrelationID != r.header.Get(httpgateway.HeaderCorrelationID) {
		t.Errorf("problem correlation id %q, header %q", p.CorrelationID, r.header.Get(httpgateway.HeaderCorrelationID))
	}
	return p
}

func do(t *testing.T, method, url, body string, header ...string) reply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, b}
}

var bearer = []string{"Authorization", "Bearer " + token}

func TestPathQueryAndBodyMapOntoTheInput(t *testing.T) {
	t.Parallel()
	_, srv := newGateway(t, newEngine(t), httpgateway.Config{})
	r := do(t, "POST", srv.URL+"/accounts/a42/items?limit=5&tags=x&tags=y", `{"name":"Ada","note":"hi"}`, bearer...)
	if r.status != http.StatusCreated {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var out EchoOut
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatal(err)
	}
	if out.In.ID != "a42" || out.In.Name != "Ada" || out.In.Limit != 5 || strings.Join(out.In.Tags, ",") != "x,y" || out.In.Note == nil || *out.In.Note != "hi" {
		t.Errorf("input seen by the handler: %+v", out.In)
	}
	if out.Principal != "ada" || out.Tenant != "acme" {
		t.Errorf("principal %q tenant %q, want ada acme", out.Principal, out.Tenant)
	}

	// GET: path and query only
	r = do(t, "GET", srv.URL+"/accounts/b7?verbose=true&page=3", "", bearer...)
	if r.status != http.StatusOK {
		t.Fatalf("GET: %d %s", r.status, r.body)
	}
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatal(err)
	}
	if out.In.ID != "b7" || out.In.Name != "verbose" || out.In.Limit != 3 {
		t.Errorf("GET input: %+v", out.In)
	}
}

func TestInvalidInputIs400NamingTheField(t *testing.T) {
	t.Parallel()
	_, srv := newGateway(t, newEngine(t), httpgateway.Config{})
	for _, c := range []struct {
		name, method, path, body string
		field                    string
	}{
		{"wrong type in body", "POST", "/accounts/a/items", `{"name": 5}`, "name"},
		{"unknown body field", "POST", "/accounts/a/items", `{"name":"x","nick":"y"}`, "nick"},
		{"Validate failed", "POST", "/accounts/a/items", `{"name":"bad"}`, "name"},
		{"path field in the body", "POST", "/accounts/a/items", `{"name":"x","id":"b"}`, "id"},
		{"path field in the body, other case", "POST", "/accounts/a/items", `{"name":"x","ID":"b"}`, "ID"},
		{"query field in the body", "POST", "/accounts/a/items?limit=1", `{"name":"x","limit":2}`, "limit"},
		{"query value of the wrong type", "POST", "/accounts/a/items?limit=many", `{"name":"x"}`, "limit"},
		{"unknown query parameter", "POST", "/accounts/a/items?colour=red", `{"name":"x"}`, "colour"},
		{"query parameter given twice", "GET", "/accounts/a?page=1&page=2", ``, "page"},
		{"boolean query parameter", "GET", "/accounts/a?verbose=maybe", ``, "verbose"},
		{"path field in the query", "GET", "/accounts/a?id=b", ``, "id"},
		{"malformed JSON", "POST", "/accounts/a/items", `{"name":`, ""},
		{"not an object", "POST", "/accounts/a/items?limit=1", `["x"]`, ""},
		{"trailing data", "POST", "/public/echo", `{"name":"x"} {}`, ""},
		{"body on a GET", "GET", "/accounts/a", `{"page":1}`, ""},
		{"handler's own Invalid", "POST", "/fail", `{"code":400}`, "code"},
		{"required field missing", "POST", "/public/echo", `{"note":"n"}`, "name"},
		{"empty body where a field is required: the engine's empty payload", "POST", "/public/echo", ``, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := do(t, c.method, srv.URL+c.path, c.body, bearer...)
			if r.status != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", r.status, r.body)
			}
			p := r.problem(t)
			if p.Field != c.field || p.Reason != "invalid_input" || p.Type != httpgateway.ProblemTypePrefix+"invalid_input" {
				t.Errorf("problem %+v, want field %q", p, c.field)
			}
			if c.field != "" && !strings.HasPrefix(p.Detail, c.field+":") {
				t.Errorf("detail %q does not start with the field", p.Detail)
			}
		})
	}
}

func TestErrorsMapToStatuses(t *testing.T) {
	t.Parallel()
	_, srv := newGateway(t, newEngine(t), httpgateway.Config{})
	for _, c := range []struct {
		body   string
		status int
		reason string
	}{
		{`{"code":403}`, 403, ""},
		{`{"code":404}`, 404, ""},
		{`{"code":409}`, 409, ""},
		{`{"code":422}`, 422, ""},
		{`{"code":500}`, 500, "internal"},
		{`{"code":0}`, 500, "internal"}, // a panic
	} {
		r := do(t, "POST", srv.URL+"/fail", c.body)
		if r.status != c.status {
			t.Errorf("%s: status %d, want %d: %s", c.body, r.status, c.status, r.body)
			continue
		}
		p := r.problem(t)
		if p.Reason != c.reason {
			t.Errorf("%s: reason %q, want %q", c.body, p.Reason, c.reason)
		}
		if c.status < 500 && (p.Detail != "failed on purpose" || p.Details["hint"] != "x") {
			t.Errorf("%s: a 4xx keeps the handler's message and details: %+v", c.body, p)
		}
		if c.status == 500 {
			if strings.Contains(string(r.body), "secret") || p.Detail != "internal error" {
				t.Errorf("a 500 leaks internals: %s", r.body)
			}
			if p.Details["message_id"] == nil {
				t.Errorf("a 500 names the failed message: %s", r.body)
			}
		}
	}

	r := do(t, "GET", srv.URL+"/accounts/nobody", "", bearer...)
	if p := r.problem(t); r.status != 404 || p.Detail != `no account "nobody"` {
		t.Errorf("404: %d %+v", r.status, p)
	}
	r = do(t, "POST", srv.URL+"/slow", `{"millis": 5000}`)
	if p := r.problem(t); r.status != http.StatusGatewayTimeout || p.Reason != "timeout" {
		t.Errorf("timeout: %d %+v", r.status, p)
	}
	r = do(t, "POST", srv.URL+"/ghost", `{}`)
	if p := r.problem(t); r.status != http.StatusServiceUnavailable || p.Reason != "no_handler" {
		t.Errorf("no handler: %d %+v", r.status, p)
	}
	r = do(t, "GET", srv.URL+"/nowhere", "")
	if p := r.problem(t); r.status != http.StatusNotFound {
		t.Errorf("unknown path: %d %+v", r.status, p)
	}
	r = do(t, "DELETE", srv.URL+"/fail", "")
	if p := r.problem(t); r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != "POST" {
		t.Errorf("wrong method: %d %+v %v", r.status, p, r.header)
	}
	r = do(t, "POST", srv.URL+"/public/echo", `{"name":"x"}`, "Content-Type", "text/plain")
	if p := r.problem(t); r.status != http.StatusUnsupportedMediaType {
		t.Errorf("text body: %d %+v", r.status, p)
	}
}

func TestEndpointsAreProtectedByDefault(t *testing.T) {
	t.Parallel()
	eng := newEngine(t)
	// No authenticator at all: every protected endpoint is a 401.
	gw := httpgateway.New(httpgateway.Config{Engine: eng, Logger: slog.New(slog.DiscardHandler)})
	routes(gw)
	bare := httptest.NewServer(gw)
	defer bare.Close()
	r := do(t, "GET", bare.URL+"/accounts/a", "", bearer...)
	if p := r.problem(t); r.status != http.StatusUnauthorized || r.header.Get("WWW-Authenticate") != "Bearer" {
		t.Errorf("no authenticator: %d %+v", r.status, p)
	}

	_, srv := newGateway(t, eng, httpgateway.Config{})
	for _, h := range [][]string{nil, {"Authorization", "Bearer wrong"}, {"Authorization", "Basic " + token}} {
		r := do(t, "GET", srv.URL+"/accounts/a", "", h...)
		if p := r.problem(t); r.status != http.StatusUnauthorized || strings.Contains(p.Detail, token) {
			t.Errorf("credentials %v: %d %+v", h, r.status, p)
		}
	}
	// An authenticator's 403 is kept; its other errors become a plain 401.
	deny := httpgateway.AuthenticatorFunc(func(r *http.Request) (string, string, error) {
		if r.Header.Get("X-Who") == "intruder" {
			return "", "", engine.NewError(http.StatusForbidden, "intruders are not welcome")
		}
		return "", "", errors.New("ldap: connection refused to 10.1.2.3")
	})
	_, srv2 := newGateway(t, eng, httpgateway.Config{Authenticator: deny})
	if r := do(t, "GET", srv2.URL+"/accounts/a", "", "X-Who", "intruder"); r.status != http.StatusForbidden || r.problem(t).Detail != "intruders are not welcome" {
		t.Errorf("403: %d %s", r.status, r.body)
	}
	if r := do(t, "GET", srv2.URL+"/accounts/a", ""); r.status != http.StatusUnauthorized || strings.Contains(string(r.body), "ldap") {
		t.Errorf("failing authenticator: %d %s", r.status, r.body)
	}

	// A public endpoint needs nothing, and carries no principal.
	r = do(t, "POST", srv.URL+"/public/echo", `{"name":"x"}`)
	var out EchoOut
	if err := json.Unmarshal(r.body, &out); r.status != http.StatusOK || err != nil || out.Principal != "" {
		t.Errorf("public: %d %s", r.status, r.body)
	}
}

func TestCorrelationAndTraceRoundTrip(t *testing.T) {
	t.Parallel()
	_, srv := newGateway(t, newEngine(t), httpgateway.Config{})
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	r := do(t, "POST", srv.URL+"/public/echo", `{"name":"x"}`, "X-Correlation-Id", "corr-123", "traceparent", tp, "tracestate", "vendor=1")
	var out EchoOut
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatal(err)
	}
	if r.header.Get("X-Correlation-Id") != "corr-123" || r.header.Get("traceparent") != tp || r.header.Get("tracestate") != "vendor=1" {
		t.Errorf("response headers %v", r.header)
	}
	if out.CorrelationID != "corr-123" || envelope.TraceID(out.Traceparent) != envelope.TraceID(tp) {
		t.Errorf("the handler saw correlation %q and traceparent %q", out.CorrelationID, out.Traceparent)
	}
	// A tracestate W3C would not propagate (over 512 bytes, malformed) is
	// dropped, not echoed.
	for _, ts := range []string{"k=" + strings.Repeat("v", 40<<10), "not a tracestate"} {
		r = do(t, "POST", srv.URL+"/public/echo", `{"name":"x"}`, "traceparent", tp, "tracestate", ts)
		if r.status != http.StatusOK || r.header.Get("tracestate") != "" {
			t.Errorf("tracestate of %d bytes: %d, echoed %d bytes", len(ts), r.status, len(r.header.Get("tracestate")))
		}
	}
	// The alternative header name works too.
	r = do(t, "POST", srv.URL+"/public/echo", `{"name":"x"}`, "Correlation-Id", "corr-456")
	if r.header.Get("X-Correlation-Id") != "corr-456" {
		t.Errorf("Correlation-Id not used: %v", r.header)
	}

	// Without headers (or with unusable ones) both are generated, returned,
	// and are what the handler saw.
	r = do(t, "POST", srv.URL+"/public/echo", `{"name":"x"}`, "X-Correlation-Id", "bad id with spaces", "traceparent", "garbage")
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatal(err)
	}
	corr, gotTP := r.header.Get("X-Correlation-Id"), r.header.Get("traceparent")
	if corr == "" || corr == "bad id with spaces" || out.CorrelationID != corr {
		t.Errorf("generated correlation id %q, handler saw %q", corr, out.CorrelationID)
	}
	if !envelope.ValidTraceparent(gotTP) || envelope.TraceID(out.Traceparent) != envelope.TraceID(gotTP) {
		t.Errorf("generated traceparent %q, handler saw %q", gotTP, out.Traceparent)
	}
	// Problems carry the correlation id too.
	r = do(t, "POST", srv.URL+"/fail", `{"code":409}`, "X-Correlation-Id", "corr-789")
	if p := r.problem(t); p.CorrelationID != "corr-789" {
		t.Errorf("problem correlation id %q", p.CorrelationID)
	}
}

func TestBodyLimitIs413(t *testing.T) {
	t.Parallel()
	_, srv := newGateway(t, newEngine(t), httpgateway.Config{MaxBodyBytes: 1024})
	big := `{"name":"` + strings.Repeat("x", 2048) + `"}`
	r := do(t, "POST", srv.URL+"/public/echo", big)
	p := r.problem(t)
	if r.status != http.StatusRequestEntityTooLarge || p.Reason != "payload_too_large" {
		t.Errorf("big body: %d %+v", r.status, p)
	}
	if r := do(t, "POST", srv.URL+"/public/echo", `{"name":"`+strings.Repeat("x", 900)+`"}`); r.status != http.StatusOK {
		t.Errorf("body under the limit: %d %s", r.status, r.body)
	}
}

func TestDrainingRefusesNewRequestsAndFinishesInFlightOnes(t *testing.T) {
	eng := newEngine(t)
	gw, srv := newGateway(t, eng, httpgateway.Config{})
	var wg sync.WaitGroup
	slow := make(chan reply, 1)
	wg.Go(func() { slow <- do(t, "POST", srv.URL+"/slow", `{"millis": 200}`) })
	for gw.Stats().InFlight == 0 {
		time.Sleep(time.Millisecond)
	}
	gw.Drain()
	r := do(t, "POST", srv.URL+"/public/echo", `{"name":"x"}`)
	p := r.problem(t)
	if r.status != http.StatusServiceUnavailable || p.Reason != "draining" || r.header.Get("Retry-After") == "" {
		t.Errorf("while draining: %d %+v %v", r.status, p, r.header)
	}
	wg.Wait()
	if r := <-slow; r.status != http.StatusOK {
		t.Errorf("the in-flight request: %d %s", r.status, r.body)
	}
	if st := gw.Stats(); st.Served != 1 || st.Rejected != 1 || st.InFlight != 0 {
		t.Errorf("stats %+v, want 1 served, 1 rejected", st)
	}

	// A stopped engine refuses too.
	_, srv2 := newGateway(t, eng, httpgateway.Config{})
	if err := eng.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	r = do(t, "POST", srv2.URL+"/public/echo", `{"name":"x"}`)
	if p := r.problem(t); r.status != http.StatusServiceUnavailable || p.Reason != "stopped" {
		t.Errorf("stopped engine: %d %+v", r.status, p)
	}
}

func TestInvalidDeclarationsPanic(t *testing.T) {
	t.Parallel()
	for name, declare := range map[string]func(){
		"unknown wildcard":    func() { httpgateway.NewEndpoint(http.MethodGet, "/accounts/{nope}", Find) },
		"bad method":          func() { httpgateway.NewEndpoint("BREW", "/coffee", Find) },
		"not a path":          func() { httpgateway.NewEndpoint(http.MethodGet, "accounts", Find) },
		"method in pattern":   func() { httpgateway.NewEndpoint(http.MethodGet, "GET /accounts", Find) },
		"query on a GET":      func() { httpgateway.NewEndpoint(http.MethodGet, "/a", Find, httpgateway.Query("page")) },
		"unknown query field": func() { httpgateway.NewEndpoint(http.MethodPost, "/a", Echo, httpgateway.Query("nope")) },
		"struct in a query": func() {
			httpgateway.NewEndpoint(http.MethodGet, "/echo", engine.NewCommand[EchoOut, Empty]("x", "1", "y"))
		},
		"non-2xx status": func() { httpgateway.NewEndpoint(http.MethodPost, "/a", Echo, httpgateway.Status(302)) },
		"negative call timeout": func() {
			httpgateway.NewEndpoint(http.MethodPost, "/a", Echo, httpgateway.CallTimeout(-time.Second))
		},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			declare()
		}()
	}
	gw := httpgateway.New(httpgateway.Config{Engine: newEngine(t)})
	httpgateway.Route(gw, http.MethodGet, "/accounts/{id}", Find)
	defer func() {
		if recover() == nil {
			t.Error("mounting GET /accounts/{id} twice did not panic")
		}
	}()
	httpgateway.Route(gw, http.MethodGet, "/accounts/{id}", Find)
}

// Validate reports every problem at once; New refuses an invalid Config.
func TestConfigValidate(t *testing.T) {
	err := httpgateway.Config{MaxBodyBytes: -1, MaxInFlight: -1, CallTimeout: -time.Second, Endpoints: []*httpgateway.Endpoint{nil}}.Validate()
	for _, want := range []string{"Engine", "MaxBodyBytes is negative", "MaxInFlight is negative", "CallTimeout is negative", "endpoint 0 of Endpoints is nil"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v, want %q", err, want)
		}
	}
	if err := (httpgateway.Config{Engine: newEngine(t)}).Validate(); err != nil {
		t.Errorf("the zero value of every other field is valid: %v", err)
	}
	defer func() {
		if v := recover(); v == nil || !strings.Contains(fmt.Sprint(v), "CallTimeout is negative") {
			t.Errorf("New with an invalid config: recovered %v", v)
		}
	}()
	httpgateway.New(httpgateway.Config{Engine: newEngine(t), CallTimeout: -time.Second})
}

// Endpoints declared next to their command and mounted through Config.
func TestEndpointsFromConfig(t *testing.T) {
	t.Parallel()
	echoEndpoint := httpgateway.NewEndpoint(http.MethodPut, "/echo/{id}", Echo, httpgateway.Public())
	gw := httpgateway.New(httpgateway.Config{Engine: newEngine(t), Endpoints: []*httpgateway.Endpoint{echoEndpoint}})
	srv := httptest.NewServer(gw)
	defer srv.Close()
	r := do(t, "PUT", srv.URL+"/echo/e1", `{"name":"x"}`)
	if r.status != http.StatusOK || !bytes.Contains(r.body, []byte(`"id":"e1"`)) {
		t.Errorf("%d %s", r.status, r.body)
	}
	if echoEndpoint.String() != "PUT /echo/{id}" {
		t.Errorf("String() = %q", echoEndpoint)
	}
}
