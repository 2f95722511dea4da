package workflow

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"

	"github.com/google/uuid"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/router"
)

// Workflow is a durable, multi-step process declared with New: a function
// of a Context and an input whose steps are checkpointed in PostgreSQL.
// Declare it once, as a package-level variable; the service named in New
// runs it (Register), and any engine starts it (Start, Invoke).
type Workflow[In, Out any] struct {
	def *definition
	// start is the caller's side of startIn for Start, which chooses the
	// run id: idempotent. routed is StartCommand's, whose run id may be
	// empty (chosen by the service at each attempt): not idempotent.
	start, routed *engine.Command[StartRequest[In], Started]
	wait          *engine.Command[waitIn, waitOut]
}

// definition is a workflow with its types erased, as the runner sees it.
type definition struct {
	id, service, version, name string
	// run decodes the input, runs the workflow function on x and returns
	// its encoded output.
	run func(x *execution, input []byte) ([]byte, error)
	// checkInput decodes the input strictly and validates it.
	checkInput func(input []byte) error
	// handlers registers the start and wait commands on svc for r.
	handlers     func(svc *engine.Service, r *runner)
	correlations map[string]*correlation // by event name
}

// Option configures a workflow in New.
type Option func(*options)

type options struct {
	correlations []*correlation
}

// correlation is an event a workflow Awaits, with how to key it.
type correlation struct {
	event string
	typ   reflect.Type // of the *engine.Event[T]
	key   func(v any) string
	// keyOf decodes a payload of the event and returns its key
	// (workflowtest's signals, stored as JSON).
	keyOf func(payload []byte) (string, error)
	// subscribe subscribes svc to the event; keys are the key functions of
	// every workflow of svc that correlates it.
	subscribe func(svc *engine.Service, r *runner, keys []func(any) string)
}

// Correlate declares that the workflow Awaits ev, and how an event is
// matched to the Await that waits for it: key(payload) is compared with the
// key given to Await. The workflow's service subscribes to ev (subscription
// "wf-<event>") and keeps each event by key (an event with an empty key is
// ignored) until SignalRetention, so an event that comes before the run
// reaches its Await is not missed.
func Correlate[T any](ev *engine.Event[T], key func(T) string) Option {
	return func(o *options) {
		c := &correlation{
			event: ev.String(),
			typ:   reflect.TypeOf(ev),
			key:   func(v any) string { return key(v.(T)) },
			keyOf: func(payload []byte) (string, error) {
				var v T
				if err := json.Unmarshal(payload, &v); err != nil {
					return "", err
				}
				return key(v), nil
			},
		}
		c.subscribe = func(svc *engine.Service, r *runner, keys []func(any) string) {
			engine.Subscribe(svc, ev, func(ctx context.Context, v T) error {
				payload, err := json.Marshal(v)
				if err != nil {
					return fmt.Errorf("workflow: encoding %s: %w", ev, err)
				}
				seen := map[string]bool{}
				for _, k := range keys {
					key := k(v)
					if key == "" || seen[key] || !validKey(key) { // no Await can wait for such a key
						continue
					}
					seen[key] = true
					if err := r.signal(ctx, ev.String(), key, engine.MetaFrom(ctx).MessageID, payload); err != nil {
						return err
					}
				}
				return nil
			}, engine.SubscriptionName(subscriptionName(ev.String())))
		}
		o.correlations = append(o.correlations, c)
	}
}

// subscriptionName is "wf-<event>" with the event's dots as dashes, within
// router.ValidName's 63 characters.
func subscriptionName(event string) string {
	name := "wf-" + strings.ReplaceAll(event, ".", "-")
	if len(name) > 63 {
		sum := sha256.Sum256([]byte(event))
		name = name[:50] + "-" + hex.EncodeToString(sum[:6])
	}
	return name
}

// maxNameLen is the longest workflow name: "wf-<name>-start" is a command
// name, at most 63 characters.
const maxNameLen = 63 - len("wf-") - len("-start")

// New declares workflow name of service at version, running fn. Names are
// checked as a command's are (the workflow's internal commands
// "wf-<name>-start" and "wf-<name>-wait" must be valid command names, so
// name has at most 54 characters); an invalid one panics, like
// engine.NewCommand. A changed workflow is deployed under a new version:
// see the package documentation, "Versioning".
func New[In, Out any](service, version, name string, fn func(wf Context, in In) (Out, error), opts ...Option) *Workflow[In, Out] {
	if err := router.ValidName("workflow", name); err != nil {
		panic("switchboard: workflow.New: " + err.Error())
	}
	if len(name) > maxNameLen {
		panic(fmt.Sprintf("switchboard: workflow.New: name %q has %d characters, at most %d (its commands are wf-<name>-start and wf-<name>-wait)", name, len(name), maxNameLen))
	}
	if fn == nil {
		panic("switchboard: workflow.New: nil function")
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	w := &Workflow[In, Out]{
		start:  engine.NewCommand[StartRequest[In], Started](service, version, startName(name)).Idempotent(),
		routed: engine.NewCommand[StartRequest[In], Started](service, version, startName(name)),
		wait:   engine.NewCommand[waitIn, waitOut](service, version, "wf-"+name+"-wait").Idempotent(),
	}
	d := &definition{
		id:           router.CommandTopic(service, version, name),
		service:      service,
		version:      version,
		name:         name,
		correlations: map[string]*correlation{},
	}
	for _, c := range o.correlations {
		d.correlations[c.event] = c
	}
	d.run = func(x *execution, input []byte) ([]byte, error) {
		var in In
		if err := json.Unmarshal(input, &in); err != nil {
			return nil, fmt.Errorf("workflow %s: decoding the run's input: %w", d.id, err)
		}
		out, err := fn(x.wf, in)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(out)
		if err != nil {
			return nil, fmt.Errorf("workflow %s: the output is not JSON-serialisable: %w", d.id, err)
		}
		return b, nil
	}
	d.checkInput = func(input []byte) error {
		var in In
		dec := json.NewDecoder(bytes.NewReader(input))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil {
			return engine.Invalid("input", err.Error())
		}
		if dec.More() {
			return engine.Invalid("input", "trailing data after the JSON value")
		}
		return validate(&in)
	}
	d.handlers = func(svc *engine.Service, r *runner) {
		// The service decodes the input itself (checkInput), whatever the
		// caller's types: StartRequest[In], or StartByName's raw JSON.
		start := engine.NewCommand[startIn, Started](service, version, startName(name))
		engine.Handle(svc, start, func(ctx context.Context, in startIn) (Started, error) {
			if in.RunID == "" {
				in.RunID = uuid.NewString()
			}
			id, err := r.start(ctx, d, in)
			return Started{RunID: id}, err
		})
		engine.Handle(svc, w.wait, func(ctx context.Context, in waitIn) (waitOut, error) {
			return r.wait(ctx, d, in.RunID)
		})
	}
	w.def = d
	return w
}

// validate runs v's Validate method, if it has one, and makes a 400 of a
// plain error.
func validate[T any](v *T) error {
	x, ok := any(v).(interface{ Validate() error })
	if !ok {
		return nil
	}
	err := x.Validate()
	if err == nil {
		return nil
	}
	var we *engine.Error
	if errors.As(err, &we) {
		return we
	}
	return &engine.Error{Code: http.StatusBadRequest, Reason: "invalid_input", Message: err.Error()}
}

// String returns "<service>.v<version>.<name>", the workflow's name in the
// store.
func (w *Workflow[In, Out]) String() string { return w.def.id }

func (w *Workflow[In, Out]) definition() *definition { return w.def }

// StartOption changes one Start or Invoke.
type StartOption func(*startOptions)

type startOptions struct {
	runID string
}

// RunID gives the run its id (1 to 200 bytes of printable ASCII) instead of
// a random UUID. Starting a workflow again with the same id is the same
// run: Start returns the id without starting another; the id of a run of
// another workflow is a 409 (engine.ErrConflict). The id is scoped to the
// tenant that started the run (engine.Meta's TenantID, captured at Start):
// for another tenant it is a 409 as well (reason "run_id_taken", not saying
// whose run it is), and Invoke's wait finds no such run (ErrRunNotFound).
func RunID(id string) StartOption {
	return func(o *startOptions) { o.runID = id }
}

// maxRunIDLen is the longest run id (RunID).
const maxRunIDLen = 200

// validRunID checks a run id: 1 to maxRunIDLen bytes of printable ASCII.
func validRunID(id string) error {
	if id == "" || len(id) > maxRunIDLen {
		return engine.Invalid("run_id", fmt.Sprintf("want 1 to %d bytes, have %d", maxRunIDLen, len(id)))
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x20 || id[i] > 0x7e {
			return engine.Invalid("run_id", fmt.Sprintf("byte %d is not printable ASCII", i))
		}
	}
	return nil
}

// parseName splits "<service>.v<version>.<name>" and checks each part as
// New does.
func parseName(s string) (service, version, name string, err error) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || !strings.HasPrefix(parts[1], "v") {
		return "", "", "", fmt.Errorf("%q is not <service>.v<version>.<name>", s)
	}
	service, version, name = parts[0], parts[1][1:], parts[2]
	if err := errors.Join(router.ValidName("service", service), router.ValidVersion(version), router.ValidName("workflow", name)); err != nil {
		return "", "", "", err
	}
	if len(name) > maxNameLen {
		return "", "", "", fmt.Errorf("workflow name %q has %d characters, at most %d", name, len(name), maxNameLen)
	}
	return service, version, name, nil
}

// startName is the name of a workflow's start command.
func startName(workflow string) string { return "wf-" + workflow + "-start" }

// StartRequest is the input of a workflow's start command (StartCommand):
// the run's input and, optionally, its id (see RunID; empty: a random
// UUID).
type StartRequest[In any] struct {
	RunID string `json:"run_id,omitempty"`
	Input In     `json:"input"`
}

// Validate checks the run id, if any, and the input's own Validate method.
func (r StartRequest[In]) Validate() error {
	if r.RunID != "" {
		if err := validRunID(r.RunID); err != nil {
			return err
		}
	}
	return validate(&r.Input)
}

// Started is the answer to a start: the run's id.
type Started struct {
	RunID string `json:"run_id"`
}

// The internal commands' payloads. startIn is what the workflow's service
// decodes a StartRequest as: the input is checked against the workflow's
// type by the service (checkInput).
type (
	startIn struct {
		RunID string          `json:"run_id,omitempty"`
		Input json.RawMessage `json:"input"`
	}
	waitIn struct {
		RunID string `json:"run_id"`
	}
	waitOut struct {
		Status string          `json:"status"`
		Output json.RawMessage `json:"output,omitempty"`
		Error  *engine.Error   `json:"error,omitempty"`
	}
)

// Start starts a run of the workflow with input in and returns its id,
// once the run is stored: from then on it runs to its end whatever
// happens to the processes involved. ctx must carry an engine (a handler's
// context, or engine.WithEngine); the workflow's service may run anywhere.
// in is validated here (its Validate method, if any) and again by the
// workflow's service. The run id is chosen here (RunID, or a random UUID),
// so the call is retried with it when it times out or the service is
// unavailable: a retry is the same run. The errors are the engine's
// (*engine.Error), with a 409 for a RunID used by another workflow or
// another tenant.
func (w *Workflow[In, Out]) Start(ctx context.Context, in In, opts ...StartOption) (string, error) {
	var o startOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.runID == "" {
		o.runID = uuid.NewString()
	}
	if err := validRunID(o.runID); err != nil {
		return "", err
	}
	out, err := w.start.Invoke(ctx, StartRequest[In]{RunID: o.runID, Input: in})
	if err != nil {
		return "", err
	}
	return out.RunID, nil
}

// StartCommand returns the command that starts a run of the workflow, for
// what routes commands rather than calling Start: an HTTP endpoint
// (httpgateway.Route(gw, http.MethodPost, "/orders", PlaceOrder.StartCommand())
// takes {"run_id": …, "input": {…}} and answers {"run_id": …}). Starting
// through it is starting with Start, but for retries: its run_id is
// optional, and an empty one is given a random UUID by the workflow's
// service at each attempt, so this command (another object than the one
// Start uses) is not declared Idempotent and a timed-out call is not
// retried (a retry could start a second run). Start, whose caller chooses
// the run id, retries with the same id.
func (w *Workflow[In, Out]) StartCommand() *engine.Command[StartRequest[In], Started] {
	return w.routed
}

// StartByName starts a run of the workflow named name — as List shows it,
// "<service>.v<version>.<name>" — with input, the JSON of its input, for
// tools that do not import the workflow's package (switchboard workflow
// start). runID "" is a random UUID, chosen here: like Start, the call is
// idempotent (retried with the same id after a timeout). The workflow's
// service checks input against the workflow's type (a 400 naming the
// problem); ctx must carry an engine, as for Start.
func StartByName(ctx context.Context, name string, input json.RawMessage, runID string) (string, error) {
	service, version, wf, err := parseName(name)
	if err != nil {
		return "", engine.Invalid("workflow", err.Error())
	}
	if runID == "" {
		runID = uuid.NewString()
	}
	if err := validRunID(runID); err != nil {
		return "", err
	}
	if !json.Valid(input) {
		return "", engine.Invalid("input", "not JSON")
	}
	out, err := engine.NewCommand[startIn, Started](service, version, startName(wf)).Idempotent().Invoke(ctx, startIn{RunID: runID, Input: input})
	if err != nil {
		return "", err
	}
	return out.RunID, nil
}

// Invoke starts a run (as Start) and waits for its end: its output, or its
// error as an *engine.Error (errors.As): the workflow's own error for a
// failed run, ErrCancelled for a cancelled one, ErrNondeterministic (or
// another error) for a run stopped for an operator. It waits until then or
// until ctx ends.
func (w *Workflow[In, Out]) Invoke(ctx context.Context, in In, opts ...StartOption) (Out, error) {
	var out Out
	id, err := w.Start(ctx, in, opts...)
	if err != nil {
		return out, err
	}
	for ctx.Err() == nil {
		res, err := w.wait.Invoke(ctx, waitIn{RunID: id})
		if err != nil {
			return out, err
		}
		switch res.Status {
		case statusRunning:
			continue // the service waited as long as it waits: ask again
		case statusCompleted:
			if err := json.Unmarshal(res.Output, &out); err != nil {
				return out, fmt.Errorf("workflow %s: run %s: decoding the output: %w", w, id, err)
			}
			return out, nil
		default:
			if res.Error == nil {
				res.Error = &engine.Error{Code: http.StatusInternalServerError, Reason: "internal", Message: "run " + id + " ended " + res.Status}
			}
			return out, res.Error
		}
	}
	return out, fmt.Errorf("workflow %s: waiting for run %s: %w", w, id, ctx.Err())
}

// Run statuses.
const (
	statusRunning   = "running"
	statusCompleted = "completed"
	statusFailed    = "failed"
	statusCancelled = "cancelled"
	statusStopped   = "stopped"
)

// Registrable is a workflow Register accepts: a *Workflow of any types.
type Registrable interface {
	definition() *definition
}

// Register makes svc run the workflows: it adds their internal commands
// (start, wait), the subscriptions of their Correlate options, and the
// runner, which runs while svc's engine runs (from the engine's Start to
// its Stop). Call it before registering svc on its engine, once, with
// every workflow of svc: two calls whose workflows await the same event
// subscribe svc to it twice under one subscription name, which the
// engine's Register refuses. It reports at once a missing or invalid
// store, a workflow of another service or version, and a workflow given
// twice.
func Register(svc *engine.Service, store *Store, wfs ...Registrable) error {
	var errs []error
	if svc == nil {
		errs = append(errs, errors.New("nil service"))
	}
	if store == nil {
		errs = append(errs, errors.New("no store: workflows need a PostgreSQL store (workflow.Store{DB: db})"))
	} else if err := store.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(wfs) == 0 {
		errs = append(errs, errors.New("no workflow given"))
	}
	defs := map[string]*definition{}
	corrs := map[string][]*correlation{}
	var order []string
	for i, w := range wfs {
		if w == nil || reflect.ValueOf(w).IsNil() {
			errs = append(errs, fmt.Errorf("workflow %d of %d is nil", i+1, len(wfs)))
			continue
		}
		d := w.definition()
		if svc != nil && (d.service != svc.Name() || d.version != svc.Version()) {
			errs = append(errs, fmt.Errorf("workflow %s does not belong to service %s", d.id, svc))
			continue
		}
		if defs[d.id] != nil {
			errs = append(errs, fmt.Errorf("workflow %s given twice", d.id))
			continue
		}
		defs[d.id] = d
		for _, c := range d.correlations {
			if prev := corrs[c.event]; len(prev) > 0 && prev[0].typ != c.typ {
				errs = append(errs, fmt.Errorf("workflow %s: event %s is correlated with two payload types (%s, %s)", d.id, c.event, prev[0].typ, c.typ))
				continue
			}
			if corrs[c.event] == nil {
				order = append(order, c.event)
			}
			corrs[c.event] = append(corrs[c.event], c)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("workflow: Register: %w", err)
	}
	r := newRunner(store.settings(), defs)
	for _, d := range defs {
		d.handlers(svc, r)
	}
	for _, ev := range order {
		cs := corrs[ev]
		keys := make([]func(any) string, len(cs))
		for i, c := range cs {
			keys[i] = c.key
		}
		cs[0].subscribe(svc, r, keys)
	}
	svc.Background(r.run)
	return nil
}
