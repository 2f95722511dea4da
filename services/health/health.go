package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/switchboard-go/switchboard/engine"
)

// DefaultCheckTimeout bounds the bridge probe of one /readyz request when
// Config.CheckTimeout is zero.
const DefaultCheckTimeout = 2 * time.Second

// Config configures a Checker. Only Engine is required; the zero value of
// every other field is its documented default.
type Config struct {
	// Engine is the engine whose state and bridge the probes report.
	// Required.
	Engine *engine.Engine
	// CheckTimeout bounds the bridge probe of one /readyz request. Zero
	// means DefaultCheckTimeout; negative is invalid.
	CheckTimeout time.Duration
	// Logger receives the errors of failed bridge probes and the start of a
	// drain. Default slog.Default().
	Logger *slog.Logger
}

// Validate reports every problem in c.
func (c Config) Validate() error {
	var errs []error
	if c.Engine == nil {
		errs = append(errs, errors.New("missing Engine"))
	}
	if c.CheckTimeout < 0 {
		errs = append(errs, fmt.Errorf("CheckTimeout is negative (%s)", c.CheckTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("health: invalid config: %w", err)
	}
	return nil
}

// Status is the JSON body of both endpoints.
type Status struct {
	// Status is "alive" (/healthz), "ready" or "unavailable" (/readyz).
	Status string `json:"status"`
	// State is the engine's lifecycle stage (engine.State), or "draining"
	// once Drain was called.
	State string `json:"state"`
	// Bridge is the backend's name ("gochannel", "nats", …).
	Bridge string `json:"bridge"`
	// Services lists the services registered on the engine.
	Services []string `json:"services,omitempty"`
	// Error says which component is not ready, in fixed words ("draining:
	// shutting down", "engine <state>", "bridge <name> unreachable"). The probe's
	// error, which can name the broker's or database's address, goes to
	// the log only.
	Error string `json:"error,omitempty"`
}

// Checker serves /healthz and /readyz for one engine. It is an
// http.Handler; mount it at both paths, or under a prefix.
type Checker struct {
	eng      *engine.Engine
	timeout  time.Duration
	log      *slog.Logger
	draining atomic.Bool
}

// New returns a Checker for cfg. It panics when cfg is invalid
// (Config.Validate), like httpgateway.New: a missing engine is a
// programming error found at startup.
func New(cfg Config) *Checker {
	if err := cfg.Validate(); err != nil {
		panic(err.Error())
	}
	c := &Checker{eng: cfg.Engine, timeout: cfg.CheckTimeout, log: cfg.Logger}
	if c.timeout == 0 {
		c.timeout = DefaultCheckTimeout
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	c.log = c.log.With("component", "health")
	return c
}

// Handler returns New(cfg), serving /healthz and /readyz.
func Handler(cfg Config) http.Handler { return New(cfg) }

// Drain makes /readyz answer 503 from now on, while the engine still runs:
// call it first when shutdown begins, so that load balancers stop sending
// work before anything stops. httpgateway.Serve does.
func (c *Checker) Drain() {
	if !c.draining.Swap(true) {
		c.log.Info("draining: /readyz answers 503")
	}
}

// ServeHTTP serves a request whose path ends in /healthz or /readyz, and
// answers 404 otherwise. Only GET and HEAD are allowed.
func (c *Checker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var h http.HandlerFunc
	switch {
	case strings.HasSuffix(r.URL.Path, "/healthz"):
		h = c.Live
	case strings.HasSuffix(r.URL.Path, "/readyz"):
		h = c.Ready
	default:
		http.NotFound(w, r)
		return
	}
	h(w, r)
}

// Live answers 200 as long as the process can answer at all: a liveness
// probe that fails only when the process is wedged, so that an orchestrator
// restarts it. It does not look at the bridge (a broker outage is no reason
// to restart every process).
func (c *Checker) Live(w http.ResponseWriter, r *http.Request) {
	if !allowed(w, r) {
		return
	}
	c.write(w, r, http.StatusOK, Status{Status: "alive", State: c.state(), Bridge: c.eng.Bridge().Name(), Services: c.eng.Services()})
}

// Ready answers 200 when the process can do its work now: the engine is
// running, its bridge answers (engine.Health), and Drain was not called.
// Otherwise 503, with the state and the reason: while starting, draining or
// stopped, and when the broker is unreachable.
func (c *Checker) Ready(w http.ResponseWriter, r *http.Request) {
	if !allowed(w, r) {
		return
	}
	st := Status{Status: "ready", State: c.state(), Bridge: c.eng.Bridge().Name(), Services: c.eng.Services()}
	if c.draining.Load() {
		st.Status, st.Error = "unavailable", "draining: shutting down"
		c.write(w, r, http.StatusServiceUnavailable, st)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), c.timeout)
	defer cancel()
	if err := c.eng.Health(ctx); err != nil {
		// /readyz is unauthenticated: the answer names the component, the
		// log has the error (addresses, driver messages).
		st.Status, st.Error = "unavailable", "bridge "+st.Bridge+" unreachable"
		if errors.Is(err, engine.ErrNotReady) {
			st.Error = "engine " + c.eng.State().String()
		} else {
			c.log.Warn("not ready: the bridge probe failed", "bridge", st.Bridge, "err", err)
		}
		c.write(w, r, http.StatusServiceUnavailable, st)
		return
	}
	c.write(w, r, http.StatusOK, st)
}

func (c *Checker) state() string {
	if c.draining.Load() {
		if s := c.eng.State(); s == engine.StateRunning {
			return "draining"
		}
	}
	return c.eng.State().String()
}

func allowed(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

func (c *Checker) write(w http.ResponseWriter, r *http.Request, code int, st Status) {
	body, _ := json.Marshal(st)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if r.Method != http.MethodHead {
		_, _ = w.Write(append(body, '\n'))
	}
}
