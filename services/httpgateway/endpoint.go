package httpgateway

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/switchboard-go/switchboard/engine"
)

// Endpoint is one command exposed at one method and path. Declare it next
// to the command with NewEndpoint, or let Route build and mount it.
type Endpoint struct {
	method, pattern string // as declared
	muxPattern      string // the path, for http.ServeMux
	docPath         string // the OpenAPI path template
	command         string // the command's topic, also the operationId
	public          bool
	status          int
	timeout         time.Duration
	summary, desc   string
	tags            []string
	queryOpt        []string // Query option
	in, out         reflect.Type

	fields     map[string]field // json fields of In; nil when In is not a struct
	pathParams []string         // wildcard names, in pattern order
	query      map[string]bool  // fields that come from the query string
	hasBody    bool             // the method takes a JSON body
	// bodyRequired: an empty body is an empty payload (400), as the
	// OpenAPI document's requestBody.required says: the input is not a
	// struct, or a field that comes from the body is required.
	bodyRequired bool

	serve func(ctx context.Context, g *Gateway, w http.ResponseWriter, r *http.Request, timeout time.Duration)
}

// RouteOption configures one endpoint (Route, NewEndpoint).
type RouteOption func(*Endpoint)

// Public lets anyone call the endpoint: the Authenticator is not consulted
// and the call carries no principal or tenant. Endpoints are protected
// unless marked Public.
func Public() RouteOption { return func(e *Endpoint) { e.public = true } }

// Status sets the HTTP status of a successful answer (default 200), such
// as http.StatusCreated.
func Status(code int) RouteOption { return func(e *Endpoint) { e.status = code } }

// CallTimeout bounds the command call of this endpoint instead of
// Config.CallTimeout. Zero means Config.CallTimeout; negative is an
// inconsistent declaration.
func CallTimeout(d time.Duration) RouteOption { return func(e *Endpoint) { e.timeout = d } }

// Summary sets the operation's summary in the OpenAPI document.
func Summary(s string) RouteOption { return func(e *Endpoint) { e.summary = s } }

// Description sets the operation's description in the OpenAPI document.
func Description(s string) RouteOption { return func(e *Endpoint) { e.desc = s } }

// Tags sets the operation's tags in the OpenAPI document (default: the
// command's service name).
func Tags(tags ...string) RouteOption { return func(e *Endpoint) { e.tags = tags } }

// Query names input fields (by JSON name) that a POST, PUT or PATCH
// endpoint takes from the query string instead of the body. GET and DELETE
// endpoints take every field that is not a path parameter from the query
// string without it.
func Query(fields ...string) RouteOption {
	return func(e *Endpoint) { e.queryOpt = append(e.queryOpt, fields...) }
}

var wildcard = regexp.MustCompile(`\{([^{}]*)\}`)

var bodyMethods = map[string]bool{http.MethodPost: true, http.MethodPut: true, http.MethodPatch: true}

// NewEndpoint declares that cmd is served at method and pattern. pattern is
// a path in http.ServeMux syntax: "/users/{id}" binds the wildcard id to
// the input field whose JSON name is "id"; "{rest...}" takes the rest of
// the path; "{$}" anchors a trailing slash.
//
// How a request becomes the command's input In (a struct, or any JSON type
// when the pattern has no wildcards and the method takes a body):
//   - path wildcards fill the fields they name;
//   - GET and DELETE take every other field from the query string (a
//     repeated parameter fills a slice) and no body;
//   - POST, PUT and PATCH take the other fields from a JSON body, except
//     those named with the Query option, which come from the query string;
//   - a field given twice (in the path and the body, say), an unknown query
//     parameter or body field, a value of the wrong type, or a failed
//     Validate is a 400 problem naming the field.
//
// The result is the JSON of Out. NewEndpoint panics when the declaration is
// inconsistent (unknown method, invalid pattern, a wildcard that names no
// field of In, a query field that is not a scalar or a slice of scalars),
// like engine.NewCommand panics on an invalid name.
func NewEndpoint[In, Out any](method, pattern string, cmd *engine.Command[In, Out], opts ...RouteOption) *Endpoint {
	if cmd == nil {
		panic("httpgateway: NewEndpoint: nil command")
	}
	ep := &Endpoint{
		method: method, pattern: pattern, command: cmd.String(), status: http.StatusOK,
		tags: []string{cmd.Service()},
		in:   reflect.TypeFor[In](), out: reflect.TypeFor[Out](),
	}
	for _, o := range opts {
		o(ep)
	}
	if err := ep.init(); err != nil {
		panic(fmt.Sprintf("httpgateway: %s %s (%s): %v", method, pattern, cmd, err))
	}
	ep.serve = func(ctx context.Context, g *Gateway, w http.ResponseWriter, r *http.Request, timeout time.Duration) {
		var in In
		if p := ep.decode(w, r, g.cfg.MaxBodyBytes, &in); p != nil {
			g.writeProblem(w, r, *p)
			return
		}
		out, err := cmd.Invoke(ctx, in, engine.CallTimeout(timeout))
		if err != nil {
			g.writeError(w, r, ep, err)
			return
		}
		body, err := marshal(out)
		if err != nil {
			g.writeError(w, r, ep, fmt.Errorf("encoding the result of %s: %w", ep.command, err))
			return
		}
		writeJSON(w, ep.status, body)
	}
	return ep
}

// Route declares cmd at method and pattern (see NewEndpoint) and mounts it
// on gw:
//
//	httpgateway.Route(gw, http.MethodPost, "/users", userapi.CreateUser, httpgateway.Public())
func Route[In, Out any](gw *Gateway, method, pattern string, cmd *engine.Command[In, Out], opts ...RouteOption) {
	gw.Mount(NewEndpoint(method, pattern, cmd, opts...))
}

// String returns "METHOD pattern".
func (ep *Endpoint) String() string { return ep.method + " " + ep.pattern }

// init checks the declaration and derives the mapping.
func (ep *Endpoint) init() error {
	switch ep.method {
	case http.MethodGet, http.MethodDelete, http.MethodPost, http.MethodPut, http.MethodPatch:
	default:
		return fmt.Errorf("method %q is not one of GET, POST, PUT, PATCH, DELETE", ep.method)
	}
	if !strings.HasPrefix(ep.pattern, "/") {
		return fmt.Errorf("pattern %q must be a path starting with /", ep.pattern)
	}
	if err := handle(http.NewServeMux(), ep.pattern, http.NotFoundHandler()); err != nil {
		return err
	}
	if ep.timeout < 0 {
		return fmt.Errorf("CallTimeout is negative (%s)", ep.timeout)
	}
	if ep.status < 200 || ep.status > 299 {
		return fmt.Errorf("success status %d is not a 2xx", ep.status)
	}
	ep.muxPattern = ep.pattern
	ep.hasBody = bodyMethods[ep.method]
	ep.docPath = strings.ReplaceAll(ep.pattern, "{$}", "")
	for _, m := range wildcard.FindAllStringSubmatch(ep.pattern, -1) {
		if m[1] == "$" {
			continue
		}
		name, rest := strings.CutSuffix(m[1], "...")
		ep.pathParams = append(ep.pathParams, name)
		if rest {
			ep.docPath = strings.Replace(ep.docPath, m[0], "{"+name+"}", 1)
		}
	}
	in := deref(ep.in)
	if in.Kind() != reflect.Struct {
		if len(ep.pathParams) > 0 || len(ep.queryOpt) > 0 || !ep.hasBody {
			return fmt.Errorf("input %s is not a struct: it can only come from the body of a POST, PUT or PATCH", ep.in)
		}
		ep.bodyRequired = true
		return nil
	}
	ep.fields = jsonFields(in)
	ep.query = map[string]bool{}
	for _, name := range ep.pathParams {
		f, ok := ep.fields[name]
		if !ok {
			return fmt.Errorf("path wildcard {%s} names no field of %s (JSON names: %s)", name, ep.in, strings.Join(fieldNames(ep.fields), ", "))
		}
		if !scalar(f.typ) {
			return fmt.Errorf("path wildcard {%s}: field type %s is not a string, number or boolean", name, f.typ)
		}
	}
	if ep.hasBody {
		for _, name := range ep.queryOpt {
			f, ok := ep.fields[name]
			if !ok {
				return fmt.Errorf("query field %q is not a field of %s", name, ep.in)
			}
			if slices.Contains(ep.pathParams, name) {
				return fmt.Errorf("query field %q is also a path wildcard", name)
			}
			if !queryable(f.typ) {
				return fmt.Errorf("query field %q: type %s is not a scalar or a slice of scalars", name, f.typ)
			}
			ep.query[name] = true
		}
		for name, f := range ep.fields {
			if !f.omitempty && ep.paramIn(name) == "" {
				ep.bodyRequired = true
			}
		}
		return nil
	}
	if len(ep.queryOpt) > 0 {
		return fmt.Errorf("the Query option is for POST, PUT and PATCH; %s takes every field from the query", ep.method)
	}
	for name, f := range ep.fields {
		if slices.Contains(ep.pathParams, name) {
			continue
		}
		if !queryable(f.typ) {
			return fmt.Errorf("field %q (%s) cannot come from the query string of a %s: use a scalar or a slice of scalars, or a POST", name, f.typ, ep.method)
		}
		ep.query[name] = true
	}
	return nil
}

// paramIn says where a field that is not in the body comes from, or "".
func (ep *Endpoint) paramIn(name string) string {
	for _, p := range ep.pathParams {
		if strings.EqualFold(p, name) {
			return "path"
		}
	}
	for q := range ep.query {
		if strings.EqualFold(q, name) {
			return "query string"
		}
	}
	return ""
}
