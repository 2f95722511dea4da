package httpgateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/envelope"
)

// Defaults for Config's zero fields.
const (
	// DefaultMaxBodyBytes bounds a request body (413 above it).
	DefaultMaxBodyBytes = 1 << 20
	// DefaultMaxInFlight bounds the requests a gateway serves at once;
	// one more is answered 503 at once. Each waits for its command with
	// its body read (up to MaxBodyBytes): 256 keeps a burst against a slow
	// command to tens of MiB rather than growing with the burst, while a
	// command answering in 10 ms still serves about 25,000 requests per
	// second.
	DefaultMaxInFlight = 256
	// DefaultCallTimeout bounds one command call made for a request. It is
	// below NewServer's WriteTimeout, so a slow command is answered with a
	// 504 problem rather than a dropped connection.
	DefaultCallTimeout = 25 * time.Second
	// DefaultOpenAPIPath is where the OpenAPI document is served.
	DefaultOpenAPIPath = "/openapi.json"
)

// Header names the gateway reads and sets.
const (
	// HeaderCorrelationID carries the correlation id in and out.
	HeaderCorrelationID = "X-Correlation-Id"
	// HeaderCorrelationIDAlt is also accepted on requests.
	HeaderCorrelationIDAlt = "Correlation-Id"
	// HeaderTraceparent is the W3C trace context header.
	HeaderTraceparent = "traceparent"
	// HeaderTracestate is the W3C vendor trace state, passed on unchanged
	// when it is one Switchboard propagates (well-formed, at most 512
	// bytes, W3C's propagation limit), dropped otherwise.
	HeaderTracestate = "tracestate"
)

// Config configures a Gateway. Only Engine is required; the zero value of
// every other field is its documented default, and a negative limit or
// timeout is invalid (Validate).
type Config struct {
	// Engine carries every call. Required.
	Engine *engine.Engine
	// Authenticator identifies the caller of every endpoint not marked
	// Public. Nil means nobody can be authenticated: every protected
	// endpoint answers 401 (secure by default).
	Authenticator Authenticator
	// Challenge is the WWW-Authenticate value sent with a 401. Default
	// "Bearer".
	Challenge string
	// SecurityScheme is the OpenAPI security scheme object describing the
	// Authenticator. Default {"type": "http", "scheme": "bearer"}.
	SecurityScheme map[string]any
	// Endpoints are mounted by New, like Mount would.
	Endpoints []*Endpoint
	// MaxBodyBytes bounds a request body. Default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxInFlight bounds the requests served at once: one more is answered
	// 503 (reason "overloaded", Retry-After) without reading its body.
	// Default DefaultMaxInFlight.
	MaxInFlight int
	// CallTimeout bounds a command call unless the endpoint sets its own
	// (the CallTimeout route option). Default DefaultCallTimeout.
	CallTimeout time.Duration
	// Title, Version and Description fill the OpenAPI document's info.
	// Defaults: "Switchboard gateway", "1", none.
	Title, Version, Description string
	// OpenAPIPath is where the document is served. Default
	// DefaultOpenAPIPath; "-" does not serve it.
	OpenAPIPath string
	// Logger receives server-side failures (5xx answers) and the start of
	// a drain. Default slog.Default().
	Logger *slog.Logger
}

// Validate reports every problem in c.
func (c Config) Validate() error {
	var errs []error
	if c.Engine == nil {
		errs = append(errs, errors.New("missing Engine"))
	}
	if c.MaxBodyBytes < 0 {
		errs = append(errs, fmt.Errorf("MaxBodyBytes is negative (%d)", c.MaxBodyBytes))
	}
	if c.MaxInFlight < 0 {
		errs = append(errs, fmt.Errorf("MaxInFlight is negative (%d)", c.MaxInFlight))
	}
	if c.CallTimeout < 0 {
		errs = append(errs, fmt.Errorf("CallTimeout is negative (%s)", c.CallTimeout))
	}
	for i, ep := range c.Endpoints {
		if ep == nil {
			errs = append(errs, fmt.Errorf("endpoint %d of Endpoints is nil", i))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("httpgateway: invalid config: %w", err)
	}
	return nil
}

// Gateway is an http.Handler that exposes commands as HTTP endpoints. Build
// it with New, add endpoints with Route or Mount, and serve it (NewServer,
// Serve). It is safe for concurrent use; endpoints may be mounted while it
// serves.
type Gateway struct {
	cfg   Config
	eng   *engine.Engine
	log   *slog.Logger
	mux   *http.ServeMux
	mu    sync.RWMutex
	paths map[string]*pathRoutes // OpenAPI path → its endpoints
	eps   []*Endpoint
	doc   atomic.Pointer[[]byte]

	draining atomic.Bool
	served   atomic.Uint64
	rejected atomic.Uint64
	slots    chan struct{} // one per request served now, cap MaxInFlight
}

// pathRoutes is every endpoint of one path pattern, by method.
type pathRoutes struct {
	byMethod map[string]*Endpoint
}

// New returns a gateway for cfg. It panics when cfg is invalid
// (Config.Validate) or an endpoint of cfg.Endpoints cannot be mounted (see
// Mount), like http.ServeMux.Handle does for a bad pattern: both are
// programming errors found at startup.
func New(cfg Config) *Gateway {
	if err := cfg.Validate(); err != nil {
		panic(err.Error())
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.Challenge == "" {
		cfg.Challenge = "Bearer"
	}
	if cfg.SecurityScheme == nil {
		cfg.SecurityScheme = map[string]any{"type": "http", "scheme": "bearer"}
	}
	if cfg.Title == "" {
		cfg.Title = "Switchboard gateway"
	}
	if cfg.Version == "" {
		cfg.Version = "1"
	}
	if cfg.OpenAPIPath == "" {
		cfg.OpenAPIPath = DefaultOpenAPIPath
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	g := &Gateway{cfg: cfg, eng: cfg.Engine, log: cfg.Logger.With("component", "httpgateway"), mux: http.NewServeMux(), paths: map[string]*pathRoutes{},
		slots: make(chan struct{}, cfg.MaxInFlight)}
	g.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		g.writeProblem(w, r, Problem{Status: http.StatusNotFound, Detail: "no endpoint at " + r.URL.Path})
	})
	if cfg.OpenAPIPath != "-" {
		g.mux.HandleFunc(cfg.OpenAPIPath, g.serveOpenAPI)
	}
	g.Mount(cfg.Endpoints...)
	if len(cfg.Endpoints) == 0 {
		g.rebuildDoc()
	}
	return g
}

// Mount adds endpoints. It panics when an endpoint's method and pattern are
// already mounted or conflict with another pattern (http.ServeMux's rules).
func (g *Gateway) Mount(eps ...*Endpoint) {
	if len(eps) == 0 {
		return
	}
	g.mu.Lock()
	for _, ep := range eps {
		if ep == nil {
			g.mu.Unlock()
			panic("httpgateway: Mount: nil endpoint")
		}
		pr := g.paths[ep.muxPattern]
		if pr == nil {
			pr = &pathRoutes{byMethod: map[string]*Endpoint{}}
			if err := handle(g.mux, ep.muxPattern, g.servePath(pr)); err != nil {
				g.mu.Unlock()
				panic(fmt.Sprintf("httpgateway: %s %s: %v", ep.method, ep.pattern, err))
			}
			g.paths[ep.muxPattern] = pr
		}
		if prev := pr.byMethod[ep.method]; prev != nil {
			g.mu.Unlock()
			panic(fmt.Sprintf("httpgateway: %s %s is mounted twice (%s and %s)", ep.method, ep.pattern, prev.command, ep.command))
		}
		pr.byMethod[ep.method] = ep
		g.eps = append(g.eps, ep)
	}
	g.mu.Unlock()
	g.rebuildDoc()
}

// handle registers h on mux, turning ServeMux's panic on a conflicting
// pattern into an error.
func handle(mux *http.ServeMux, pattern string, h http.Handler) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("%v", v)
		}
	}()
	mux.Handle(pattern, h)
	return nil
}

// Drain makes the gateway answer every new request with a 503 problem
// (reason "draining", Connection: close, Retry-After) while requests
// already being served complete. Serve calls it when shutdown begins.
func (g *Gateway) Drain() {
	if !g.draining.Swap(true) {
		g.log.Info("draining: new requests get 503")
	}
}

// Stats counts what the gateway answered since it was built.
type Stats struct {
	// Served is every request answered other than the 503s of a drain or a
	// stopped engine, whatever its status.
	Served uint64
	// Rejected is every request refused with a 503 because the gateway was
	// draining, the engine was not running, or MaxInFlight requests were
	// being served.
	Rejected uint64
	// InFlight is the number of requests being served now, at most
	// Config.MaxInFlight.
	InFlight int64
}

// Stats returns the gateway's counters.
func (g *Gateway) Stats() Stats {
	return Stats{Served: g.served.Load(), Rejected: g.rejected.Load(), InFlight: int64(len(g.slots))}
}

type requestInfoKey struct{}

// requestInfo is what ServeHTTP learnt from the request's headers.
type requestInfo struct {
	correlationID, traceparent, tracestate string
}

// ServeHTTP implements http.Handler.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	info := requestInfo{correlationID: correlationID(r), traceparent: r.Header.Get(HeaderTraceparent)}
	if envelope.ValidTraceparent(info.traceparent) {
		if ts := r.Header.Get(HeaderTracestate); envelope.ValidTracestate(ts) {
			info.tracestate = ts // an oversized or malformed one is dropped (W3C), not echoed
		}
	} else {
		info.traceparent = envelope.ChildTraceparent("") // a new, sampled trace
	}
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff") // a browser must not run a reflected body as HTML or script
	h.Set(HeaderCorrelationID, info.correlationID)
	h.Set(HeaderTraceparent, info.traceparent)
	if info.tracestate != "" {
		h.Set(HeaderTracestate, info.tracestate)
	}
	r = r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, info))

	if reason := g.refusal(); reason != "" {
		h.Set("Connection", "close")
		g.refuse(w, r, reason, "the service is "+reason+" and takes no new requests; retry on another instance")
		return
	}
	select {
	case g.slots <- struct{}{}:
		defer func() { <-g.slots }()
	default: // refused before its body is read or a call is made
		g.refuse(w, r, "overloaded", "the service is serving as many requests as it can; retry shortly")
		return
	}
	g.mux.ServeHTTP(w, r)
	g.served.Add(1)
}

// refuse answers a request the gateway does not serve now with a 503 that
// asks to retry.
func (g *Gateway) refuse(w http.ResponseWriter, r *http.Request, reason, detail string) {
	g.rejected.Add(1)
	w.Header().Set("Retry-After", "1")
	g.writeProblem(w, r, Problem{Status: http.StatusServiceUnavailable, Reason: reason, Detail: detail})
}

// refusal returns why new requests are refused now, or "".
func (g *Gateway) refusal() string {
	if g.draining.Load() {
		return "draining"
	}
	if s := g.eng.State(); s != engine.StateRunning {
		return s.String()
	}
	return ""
}

func infoFrom(r *http.Request) requestInfo {
	info, _ := r.Context().Value(requestInfoKey{}).(requestInfo)
	return info
}

// correlationID returns the request's correlation id header when it is
// usable (1 to 128 visible ASCII characters), or a new UUID.
func correlationID(r *http.Request) string {
	for _, name := range []string{HeaderCorrelationID, HeaderCorrelationIDAlt} {
		if v := r.Header.Get(name); validID(v) {
			return v
		}
	}
	return uuid.NewString()
}

func validID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// servePath dispatches a path's requests to the endpoint of their method.
func (g *Gateway) servePath(pr *pathRoutes) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.RLock()
		ep := pr.byMethod[r.Method]
		var allow []string
		if ep == nil {
			for m := range pr.byMethod {
				allow = append(allow, m)
			}
		}
		g.mu.RUnlock()
		if ep == nil {
			sort.Strings(allow)
			w.Header().Set("Allow", strings.Join(allow, ", "))
			g.writeProblem(w, r, Problem{Status: http.StatusMethodNotAllowed, Detail: r.Method + " is not allowed here; allowed: " + strings.Join(allow, ", ")})
			return
		}
		g.serveEndpoint(ep, w, r)
	})
}

// serveEndpoint authenticates, builds the call's context and runs the
// endpoint.
func (g *Gateway) serveEndpoint(ep *Endpoint, w http.ResponseWriter, r *http.Request) {
	info := infoFrom(r)
	meta := engine.Meta{CorrelationID: info.correlationID, Traceparent: info.traceparent, Tracestate: info.tracestate}
	if !ep.public {
		principal, tenant, err := g.authenticate(r)
		if err != nil {
			g.writeError(w, r, ep, err)
			return
		}
		meta.PrincipalID, meta.TenantID = principal, tenant
	}
	timeout := ep.timeout
	if timeout <= 0 {
		timeout = g.cfg.CallTimeout
	}
	ctx := engine.WithMeta(engine.WithEngine(r.Context(), g.eng), meta)
	ep.serve(ctx, g, w, r, timeout)
}

// writeJSON writes an endpoint's success response.
func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
