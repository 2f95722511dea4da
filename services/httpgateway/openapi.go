package httpgateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"path"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/invopop/jsonschema"
)

// OpenAPIVersion is the version of the OpenAPI documents the gateway
// writes.
const OpenAPIVersion = "3.1.0"

// securityName is the security scheme's name in the document.
const securityName = "auth"

// OpenAPI returns the OpenAPI 3.1 document of the mounted endpoints, as
// served at Config.OpenAPIPath.
func (g *Gateway) OpenAPI() []byte {
	return bytes.Clone(*g.doc.Load())
}

func (g *Gateway) serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		g.writeProblem(w, r, Problem{Status: http.StatusMethodNotAllowed, Detail: r.Method + " is not allowed here; allowed: GET, HEAD"})
		return
	}
	doc := *g.doc.Load()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(doc)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(doc)
	}
}

// rebuildDoc regenerates the document after a Mount.
func (g *Gateway) rebuildDoc() {
	g.mu.RLock()
	eps := slices.Clone(g.eps)
	g.mu.RUnlock()
	b, err := buildDocument(g.cfg, eps)
	if err != nil {
		panic(fmt.Sprintf("httpgateway: OpenAPI document: %v", err))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.eps) == len(eps) { // a concurrent Mount stores its own, later one
		g.doc.Store(&b)
	}
}

// document is an OpenAPI 3.1 document, its members in the usual order.
type document struct {
	OpenAPI    string                           `json:"openapi"`
	Info       info                             `json:"info"`
	Security   []map[string][]string            `json:"security"`
	Paths      map[string]map[string]*operation `json:"paths"`
	Components map[string]any                   `json:"components"`
}

type info struct {
	Title       string `json:"title"`
	Version     string `json:"version"`
	Description string `json:"description,omitempty"`
}

type operation struct {
	OperationID string                 `json:"operationId"`
	Summary     string                 `json:"summary,omitempty"`
	Description string                 `json:"description,omitempty"`
	Tags        []string               `json:"tags,omitempty"`
	Security    *[]map[string][]string `json:"security,omitempty"`
	Parameters  []any                  `json:"parameters,omitempty"`
	RequestBody map[string]any         `json:"requestBody,omitempty"`
	Responses   map[string]any         `json:"responses"`
}

// errorResponses are the components.responses every operation refers to,
// by name: status and description.
var errorResponses = []struct {
	name, status, desc string
}{
	{"BadRequest", "400", "The input is invalid: the problem's field names the input field at fault."},
	{"Unauthorized", "401", "No or invalid credentials."},
	{"PayloadTooLarge", "413", "The body exceeds the gateway's limit."},
	{"UnsupportedMediaType", "415", "The body is not declared JSON (Content-Type: application/json or a +json type, UTF-8)."},
	{"InternalError", "500", "An unexpected failure; the problem carries only the failed message's id and the correlation id."},
	{"Unavailable", "503", "The service is unavailable (no handler, unreachable, circuit open), or this instance is draining or serving as many requests as it can (Retry-After)."},
	{"Timeout", "504", "The command did not answer before its deadline."},
	{"Error", "default", "Any other error the command returns (404, 409, 422, …), as a problem."},
}

func buildDocument(cfg Config, eps []*Endpoint) (out []byte, err error) {
	defer func() { // invopop/jsonschema panics on types JSON cannot express
		if v := recover(); v != nil {
			err = fmt.Errorf("%v", v)
		}
	}()
	s := newSchemaSet()
	problem := s.schema(reflect.TypeFor[Problem]())
	doc := document{
		OpenAPI:  OpenAPIVersion,
		Info:     info{Title: cfg.Title, Version: cfg.Version, Description: cfg.Description},
		Security: []map[string][]string{{securityName: {}}},
		Paths:    map[string]map[string]*operation{},
	}
	for _, ep := range eps {
		op, err := s.operation(ep)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ep, err)
		}
		if doc.Paths[ep.docPath] == nil {
			doc.Paths[ep.docPath] = map[string]*operation{}
		}
		doc.Paths[ep.docPath][strings.ToLower(ep.method)] = op
	}
	responses := map[string]any{}
	for _, er := range errorResponses {
		responses[er.name] = map[string]any{
			"description": er.desc,
			"headers":     standardHeaders(),
			"content":     map[string]any{ProblemContentType: map[string]any{"schema": problem}},
		}
	}
	schemas := map[string]any{}
	for name, def := range s.defs {
		schemas[name] = def
	}
	doc.Components = map[string]any{
		"schemas":   schemas,
		"responses": responses,
		"parameters": map[string]any{
			"CorrelationId": map[string]any{"name": HeaderCorrelationID, "in": "header", "required": false,
				"description": "Correlation id of the conversation; generated when absent or unusable, and returned in the response.",
				"schema":      correlationSchema()},
			"Traceparent": map[string]any{"name": HeaderTraceparent, "in": "header", "required": false,
				"description": "W3C trace context; a new trace is started when absent or invalid, and returned in the response.",
				"schema":      traceparentSchema()},
		},
		"headers": map[string]any{
			"CorrelationId": map[string]any{"description": "The request's correlation id.", "schema": correlationSchema()},
			"Traceparent":   map[string]any{"description": "The request's W3C trace context.", "schema": traceparentSchema()},
		},
		"securitySchemes": map[string]any{securityName: cfg.SecurityScheme},
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	// invopop/jsonschema refers to definitions inside one schema document;
	// in OpenAPI they live in components.schemas.
	return bytes.ReplaceAll(b, []byte(`"$ref":"#/$defs/`), []byte(`"$ref":"#/components/schemas/`)), nil
}

func correlationSchema() map[string]any {
	return map[string]any{"type": "string", "minLength": 1, "maxLength": 128}
}

func traceparentSchema() map[string]any {
	return map[string]any{"type": "string", "pattern": "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"}
}

func standardHeaders() map[string]any {
	return map[string]any{
		HeaderCorrelationID: map[string]any{"$ref": "#/components/headers/CorrelationId"},
		HeaderTraceparent:   map[string]any{"$ref": "#/components/headers/Traceparent"},
	}
}

func ref(kind, name string) map[string]any {
	return map[string]any{"$ref": "#/components/" + kind + "/" + name}
}

// operation describes one endpoint.
func (s *schemaSet) operation(ep *Endpoint) (*operation, error) {
	op := &operation{
		OperationID: ep.command,
		Summary:     ep.summary,
		Description: ep.desc,
		Tags:        ep.tags,
		Responses:   map[string]any{},
	}
	if op.Summary == "" {
		op.Summary = ep.command[strings.LastIndexByte(ep.command, '.')+1:]
	}
	if op.Description == "" {
		op.Description = "Calls the command " + ep.command + "."
	}
	if ep.public {
		op.Security = &[]map[string][]string{}
	}
	in := s.schema(ep.in)
	def := s.def(ep.in)
	prop := func(name string) *jsonschema.Schema {
		if def != nil && def.Properties != nil {
			if p, ok := def.Properties.Get(name); ok {
				return p
			}
		}
		return &jsonschema.Schema{}
	}
	for _, name := range ep.pathParams {
		op.Parameters = append(op.Parameters, map[string]any{"name": name, "in": "path", "required": true, "schema": prop(name)})
	}
	if def != nil && def.Properties != nil {
		for name := range def.Properties.KeysFromOldest() {
			if ep.query[name] {
				op.Parameters = append(op.Parameters, map[string]any{"name": name, "in": "query",
					"required": slices.Contains(def.Required, name), "schema": prop(name)})
			}
		}
	}
	op.Parameters = append(op.Parameters, ref("parameters", "CorrelationId"), ref("parameters", "Traceparent"))

	if ep.hasBody {
		body, required := in, true // not a struct: the body is the input
		switch {
		case ep.fields != nil && (len(ep.pathParams) > 0 || len(ep.query) > 0):
			body, required = bodyOf(def, ep) // an inline copy without them
		case def != nil:
			required = len(def.Required) > 0
		}
		if body != nil {
			op.RequestBody = map[string]any{
				"required": required,
				"content":  map[string]any{"application/json": map[string]any{"schema": body}},
			}
		}
	}

	op.Responses[strconv.Itoa(ep.status)] = map[string]any{
		"description": http.StatusText(ep.status),
		"headers":     standardHeaders(),
		"content":     map[string]any{"application/json": map[string]any{"schema": s.schema(ep.out)}},
	}
	for _, er := range errorResponses {
		switch {
		case er.status == "401" && ep.public,
			(er.status == "413" || er.status == "415") && !ep.hasBody:
			continue
		}
		op.Responses[er.status] = ref("responses", er.name)
	}
	return op, nil
}

// bodyOf returns the schema of the body of ep: In's definition without the
// fields that come from the path or the query string (nil when none is
// left), and whether a body is required.
func bodyOf(def *jsonschema.Schema, ep *Endpoint) (*jsonschema.Schema, bool) {
	if def == nil {
		return nil, false
	}
	body := *def
	body.Properties = jsonschema.NewProperties()
	body.Required = nil
	for name, p := range def.Properties.FromOldest() {
		if ep.paramIn(name) != "" {
			continue
		}
		body.Properties.Set(name, p)
		if slices.Contains(def.Required, name) {
			body.Required = append(body.Required, name)
		}
	}
	if body.Properties.Len() == 0 {
		return nil, false
	}
	return &body, len(body.Required) > 0
}

// schemaSet generates the schemas of one document: named struct types go
// to components.schemas under unique names, anything else is inline.
type schemaSet struct {
	r     *jsonschema.Reflector
	names map[reflect.Type]string
	types map[string]reflect.Type
	defs  map[string]*jsonschema.Schema
}

func newSchemaSet() *schemaSet {
	s := &schemaSet{names: map[reflect.Type]string{}, types: map[string]reflect.Type{}, defs: map[string]*jsonschema.Schema{}}
	s.r = &jsonschema.Reflector{Anonymous: true, Namer: s.name}
	return s
}

var unsafeNameChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// name gives every named type a components.schemas name: its Go name, or
// "<package>.<name>" when another type has it already.
func (s *schemaSet) name(t reflect.Type) string {
	if n, ok := s.names[t]; ok {
		return n
	}
	base := unsafeNameChars.ReplaceAllString(t.Name(), "_")
	if base == "" {
		return ""
	}
	n := base
	for i := 1; ; i++ {
		if prev, taken := s.types[n]; !taken || prev == t {
			break
		}
		n = path.Base(t.PkgPath()) + "." + base
		if i > 1 {
			n += strconv.Itoa(i)
		}
	}
	s.names[t], s.types[n] = n, t
	return n
}

// schema returns the schema of t: a $ref for a named struct, else inline.
// A Go value that encodes as null (a nil slice, map or pointer) is allowed
// to be null, at the top and in the fields of every definition.
func (s *schemaSet) schema(t reflect.Type) *jsonschema.Schema {
	root := s.r.ReflectFromType(t)
	for name, def := range root.Definitions {
		if _, seen := s.defs[name]; !seen {
			s.defs[name] = def
			s.allowNulls(name, def)
		}
	}
	root.Definitions, root.Version, root.ID = nil, "", ""
	return nullable(t, root)
}

// def returns the definition of t's struct type, or nil.
func (s *schemaSet) def(t reflect.Type) *jsonschema.Schema {
	t = deref(t)
	if t.Kind() != reflect.Struct {
		return nil
	}
	return s.defs[s.names[t]]
}

func (s *schemaSet) allowNulls(name string, def *jsonschema.Schema) {
	t := s.types[name]
	if t == nil || t.Kind() != reflect.Struct || def.Properties == nil {
		return
	}
	for fname, f := range jsonFields(t) {
		if f.omitempty {
			continue
		}
		if p, ok := def.Properties.Get(fname); ok {
			def.Properties.Set(fname, nullable(f.typ, p))
		}
	}
}

// nullable wraps sch so that null is valid when a Go value of type t can
// encode as null.
func nullable(t reflect.Type, sch *jsonschema.Schema) *jsonschema.Schema {
	switch t.Kind() {
	case reflect.Slice, reflect.Map, reflect.Pointer:
	default:
		return sch
	}
	for _, alt := range append(sch.OneOf, sch.AnyOf...) {
		if alt.Type == "null" {
			return sch
		}
	}
	if sch.Type == "null" {
		return sch
	}
	return &jsonschema.Schema{AnyOf: []*jsonschema.Schema{sch, {Type: "null"}}}
}
