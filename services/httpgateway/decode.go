package httpgateway

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/switchboard-go/switchboard/internal/codec"
)

// decode fills dst (a pointer to the endpoint's input) from the request's
// path, query string and body. A failure is a problem to answer with.
func (ep *Endpoint) decode(w http.ResponseWriter, r *http.Request, maxBody int64, dst any) *Problem {
	doc, p := ep.document(w, r, maxBody)
	if p != nil {
		return p
	}
	return strictDecode(doc, dst)
}

// document returns the JSON of the request's input: the body, with the
// path and query fields added when the input is a struct.
func (ep *Endpoint) document(w http.ResponseWriter, r *http.Request, maxBody int64) ([]byte, *Problem) {
	body, p := ep.readBody(w, r, maxBody)
	if p != nil {
		return nil, p
	}
	// The engine refuses a null payload as an empty one; so does the
	// gateway, before it could fill fields into nothing.
	if bytes.Equal(body, []byte("null")) || (len(body) == 0 && ep.bodyRequired) {
		return nil, emptyPayload()
	}
	if ep.fields == nil { // not a struct: the body is the input
		return body, nil
	}
	var keys map[string]json.RawMessage
	if len(body) > 0 {
		if p := strictDecode(body, &keys); p != nil {
			if p.Field == "(root)" {
				return nil, invalid("", "the body must be a JSON object")
			}
			return nil, p
		}
	}
	for k := range keys {
		if where := ep.paramIn(k); where != "" {
			return nil, invalid(k, "belongs in the "+where+", not in the body")
		}
	}
	params := make([]param, 0, len(ep.pathParams))
	for _, name := range ep.pathParams {
		raw, err := paramJSON(ep.fields[name].typ, []string{r.PathValue(name)})
		if err != nil {
			return nil, invalid(name, err.Error())
		}
		params = append(params, param{name, raw})
	}
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, invalid("", "malformed query string: "+err.Error())
	}
	for _, k := range sortedKeys(query) {
		if !ep.query[k] {
			if ep.paramIn(k) == "path" {
				return nil, invalid(k, "given in both the path and the query string")
			}
			return nil, invalid(k, "unknown query parameter")
		}
		raw, err := paramJSON(ep.fields[k].typ, query[k])
		if err != nil {
			return nil, invalid(k, err.Error())
		}
		params = append(params, param{k, raw})
	}
	if p := ep.checkRequired(keys, params); p != nil {
		return nil, p
	}
	return withParams(body, params), nil
}

// param is a path or query field, by its exact JSON name, as JSON.
type param struct {
	name string
	raw  json.RawMessage
}

// withParams returns the body object with params added as members. The
// body's own bytes are kept as they are, so the strict decoder sees every
// key the client sent (a duplicate or a wrong case included) rather than a
// re-encoded copy. body is empty or a JSON object without trailing data
// (strictDecode checked it), and no param names a body key (decode refused
// those), so the result has no key twice.
func withParams(body []byte, params []param) []byte {
	if len(body) == 0 {
		body = []byte("{}")
	}
	inner := body[:len(body)-1] // without the closing brace
	out := make([]byte, 0, len(body)+16*len(params))
	out = append(out, inner...)
	comma := len(bytes.TrimSpace(inner[1:])) > 0
	for _, p := range params {
		if comma {
			out = append(out, ',')
		}
		name, _ := json.Marshal(p.name) // a string always encodes
		out = append(out, name...)
		out = append(out, ':')
		out = append(out, p.raw...)
		comma = true
	}
	return append(out, '}')
}

// emptyPayload is the engine's answer to an empty payload, so that a client
// sees one description of it whichever side refuses it.
func emptyPayload() *Problem {
	return &Problem{Status: http.StatusBadRequest, Reason: "invalid_input", Detail: "empty payload"}
}

// checkRequired answers 400 naming the first required field (a top-level
// field without omitempty or omitzero, "required" in the OpenAPI document)
// that neither the body keys nor params give.
func (ep *Endpoint) checkRequired(keys map[string]json.RawMessage, params []param) *Problem {
	for _, name := range fieldNames(ep.fields) {
		if ep.fields[name].omitempty {
			continue
		}
		if _, ok := keys[name]; ok || slices.ContainsFunc(params, func(p param) bool { return p.name == name }) {
			continue
		}
		found := false
		for k := range keys { // encoding/json matches names case-insensitively
			if strings.EqualFold(k, name) {
				found = true
				break
			}
		}
		if !found {
			where := "in the body"
			if ep.query[name] {
				where = "in the query string"
			}
			return invalid(name, "is required "+where)
		}
	}
	return nil
}

// readBody reads the body within maxBody bytes, checking its media type.
// It returns nil for an empty body.
func (ep *Endpoint) readBody(w http.ResponseWriter, r *http.Request, maxBody int64) ([]byte, *Problem) {
	ct := r.Header.Get("Content-Type")
	if ep.hasBody && ct != "" && !isJSON(ct) { // even empty: a browser posts an empty form cross-site
		return nil, notJSON()
	}
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return nil, &Problem{Status: http.StatusRequestEntityTooLarge, Reason: "payload_too_large",
			Detail:  fmt.Sprintf("the body exceeds the limit of %d bytes", tooLarge.Limit),
			Details: map[string]any{"limit": tooLarge.Limit}}
	case err != nil:
		return nil, invalid("", "cannot read the body: "+err.Error())
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, nil
	}
	if !ep.hasBody {
		return nil, invalid("", ep.method+" takes no body: send the input in the query string")
	}
	if !isJSON(ct) {
		return nil, notJSON()
	}
	return b, nil
}

// notJSON is the 415 problem for a body that is not declared JSON.
func notJSON() *Problem {
	return &Problem{Status: http.StatusUnsupportedMediaType, Reason: "unsupported_media_type",
		Detail: "the body must be JSON in UTF-8, sent with Content-Type: application/json"}
}

// isJSON reports whether the Content-Type ct declares JSON: application/json
// or a +json type, in UTF-8 (the only encoding of JSON, RFC 8259) when it
// names a charset. A body without a Content-Type is refused too: a browser
// sends a form or text/plain cross-site without asking (CSRF), while JSON
// needs a CORS preflight.
func isJSON(ct string) bool {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		return false
	}
	cs, ok := params["charset"]
	return !ok || strings.EqualFold(cs, "utf-8")
}

// strictDecode decodes b into dst exactly as the engine decodes a payload
// (codec.DecodeStrict): unknown fields and trailing data are errors, and a
// wrong type names its field.
func strictDecode(b []byte, dst any) *Problem {
	if err := codec.DecodeStrict(b, dst); err != nil {
		p, _ := problemFor(err)
		return &p
	}
	return nil
}

// invalid returns a 400 problem naming field (when not empty).
func invalid(field, problem string) *Problem {
	detail := problem
	if field != "" {
		detail = field + ": " + problem
	}
	return &Problem{Status: http.StatusBadRequest, Reason: "invalid_input", Detail: detail, Field: field}
}

// paramJSON converts path or query values to the JSON of a field of type t.
func paramJSON(t reflect.Type, vals []string) (json.RawMessage, error) {
	t = deref(t)
	if t.Kind() == reflect.Slice && !isText(t) {
		elems := make([]json.RawMessage, 0, len(vals))
		for _, v := range vals {
			raw, err := paramJSON(t.Elem(), []string{v})
			if err != nil {
				return nil, err
			}
			elems = append(elems, raw)
		}
		return json.Marshal(elems)
	}
	if len(vals) != 1 {
		return nil, errors.New("given more than once")
	}
	v := vals[0]
	switch k := t.Kind(); {
	case isText(t) || k == reflect.String:
		return json.Marshal(v)
	case k == reflect.Bool:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("want a boolean, got %q", v)
		}
		return json.Marshal(b)
	case k >= reflect.Int && k <= reflect.Int64:
		n, err := strconv.ParseInt(v, 10, t.Bits())
		if err != nil {
			return nil, fmt.Errorf("want an integer of %d bits, got %q", t.Bits(), v)
		}
		return json.Marshal(n)
	case k >= reflect.Uint && k <= reflect.Uint64:
		n, err := strconv.ParseUint(v, 10, t.Bits())
		if err != nil {
			return nil, fmt.Errorf("want a non-negative integer of %d bits, got %q", t.Bits(), v)
		}
		return json.Marshal(n)
	case k == reflect.Float32 || k == reflect.Float64:
		f, err := strconv.ParseFloat(v, t.Bits())
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, fmt.Errorf("want a number, got %q", v)
		}
		return json.Marshal(f)
	}
	return nil, fmt.Errorf("type %s cannot come from a URL", t)
}

// field is one JSON field of an input struct.
type field struct {
	typ       reflect.Type
	omitempty bool
}

// jsonFields returns the JSON fields of struct type t, by name, following
// encoding/json's rules for tags and embedded structs (a shallower field
// wins over a promoted one).
func jsonFields(t reflect.Type) map[string]field {
	out := map[string]field{}
	level := []reflect.Type{t}
	for depth := 0; len(level) > 0 && depth < 8; depth++ {
		found := map[string]field{}
		var next []reflect.Type
		for _, st := range level {
			for i := 0; i < st.NumField(); i++ {
				f := st.Field(i)
				tag := f.Tag.Get("json")
				if tag == "-" {
					continue
				}
				name, opts, _ := strings.Cut(tag, ",")
				if f.Anonymous && name == "" {
					if ft := deref(f.Type); ft.Kind() == reflect.Struct {
						next = append(next, ft)
						continue
					}
				}
				if !f.IsExported() {
					continue
				}
				if name == "" {
					name = f.Name
				}
				if _, shallower := out[name]; shallower {
					continue
				}
				found[name] = field{typ: f.Type, omitempty: strings.Contains(","+opts+",", ",omitempty,") || strings.Contains(","+opts+",", ",omitzero,")}
			}
		}
		for k, v := range found {
			out[k] = v
		}
		level = next
	}
	return out
}

func fieldNames(fields map[string]field) []string {
	names := make([]string, 0, len(fields))
	for n := range fields {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func sortedKeys(q url.Values) []string {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

func isText(t reflect.Type) bool {
	return reflect.PointerTo(t).Implements(textUnmarshaler)
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// scalar reports whether one URL value can fill a field of type t.
func scalar(t reflect.Type) bool {
	t = deref(t)
	if isText(t) {
		return true
	}
	switch t.Kind() {
	case reflect.String, reflect.Bool,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return true
	}
	return false
}

// queryable reports whether query values can fill a field of type t: a
// scalar, or a slice of scalars (not []byte).
func queryable(t reflect.Type) bool {
	t = deref(t)
	if scalar(t) {
		return true
	}
	return t.Kind() == reflect.Slice && t.Elem().Kind() != reflect.Uint8 && scalar(t.Elem())
}
