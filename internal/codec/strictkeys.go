package codec

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"unicode"

	"github.com/switchboard-go/switchboard/internal/envelope"
)

// encoding/json matches object keys to fields case-insensitively and lets
// a repeated key overwrite the first. Strict decoding (the OpenAPI
// document's additionalProperties: false) wants neither, so after a
// successful decode checkKeys walks the JSON once more, guided by the
// target type: every key of an object decoded into a struct must be a
// field's exact JSON name, and no object (struct or map) may repeat a key.
// Values the type hands to custom unmarshalers, json.RawMessage or `any`
// are not looked into: their keys are theirs to judge.

// keyShape is what checkKeys needs to know about a Go type: nil when
// nothing under it is an object to check.
type keyShape struct {
	fields map[string]keyField // struct: exact JSON name → field; nil for a map
	folded map[string]string   // struct: lower-case name → exact name, for hints
	elem   *keyShape           // map value, slice or array element
	isMap  bool
}

type keyField struct {
	index int // bit in the seen set
	shape *keyShape
}

// keyShapes caches the shape of every payload type: reflect.Type →
// *keyShape (possibly nil).
var keyShapes sync.Map

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func shapeOf(t reflect.Type) *keyShape {
	if s, ok := keyShapes.Load(t); ok {
		return s.(*keyShape)
	}
	s := buildShape(t, map[reflect.Type]*keyShape{})
	keyShapes.Store(t, s)
	return s
}

// buildShape computes t's shape; building holds the structs being built,
// so that recursive types end.
func buildShape(t reflect.Type, building map[reflect.Type]*keyShape) *keyShape {
	if t.Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(jsonUnmarshaler) ||
		t.Implements(textUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler) {
		return nil
	}
	switch t.Kind() {
	case reflect.Pointer:
		return buildShape(t.Elem(), building)
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 { // []byte is a base64 string
			return nil
		}
		if elem := buildShape(t.Elem(), building); elem != nil {
			return &keyShape{elem: elem}
		}
		return nil
	case reflect.Map:
		return &keyShape{isMap: true, elem: buildShape(t.Elem(), building)}
	case reflect.Struct:
		if s, ok := building[t]; ok {
			return s
		}
		s := &keyShape{fields: map[string]keyField{}, folded: map[string]string{}}
		building[t] = s
		for i, f := range jsonFields(t) {
			s.fields[f.name] = keyField{index: i, shape: buildShape(f.typ, building)}
			s.folded[strings.ToLower(f.name)] = f.name
		}
		return s
	}
	return nil
}

type jsonField struct {
	name   string
	typ    reflect.Type
	depth  int
	tagged bool
}

// jsonFields returns the fields encoding/json decodes into t's objects,
// by the same rules: exported fields, `json:"-"` skipped, tag names,
// embedded structs' fields promoted, and of several fields with one name
// the shallowest wins, then the tagged one; a tie hides the name.
func jsonFields(t reflect.Type) []jsonField {
	var all []jsonField
	visited := map[reflect.Type]bool{}
	var walk func(t reflect.Type, depth int)
	walk = func(t reflect.Type, depth int) {
		if visited[t] {
			return
		}
		visited[t] = true
		for i := range t.NumField() {
			f := t.Field(i)
			ft := f.Type
			if ft.Name() == "" && ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if f.Anonymous {
				if !f.IsExported() && ft.Kind() != reflect.Struct {
					continue
				}
			} else if !f.IsExported() {
				continue
			}
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			if !validTagName(name) {
				name = ""
			}
			if name == "" && f.Anonymous && ft.Kind() == reflect.Struct {
				walk(ft, depth+1)
				continue
			}
			tagged := name != ""
			if !tagged {
				name = f.Name
			}
			all = append(all, jsonField{name: name, typ: f.Type, depth: depth, tagged: tagged})
		}
	}
	walk(t, 0)

	byName := map[string][]jsonField{}
	var order []string
	for _, f := range all {
		if _, ok := byName[f.name]; !ok {
			order = append(order, f.name)
		}
		byName[f.name] = append(byName[f.name], f)
	}
	var out []jsonField
	for _, name := range order {
		if f, ok := dominant(byName[name]); ok {
			out = append(out, f)
		}
	}
	return out
}

// dominant picks the field encoding/json uses among fields of one name.
func dominant(fs []jsonField) (jsonField, bool) {
	minDepth := fs[0].depth
	for _, f := range fs {
		minDepth = min(minDepth, f.depth)
	}
	var top []jsonField
	for _, f := range fs {
		if f.depth == minDepth {
			top = append(top, f)
		}
	}
	if len(top) == 1 {
		return top[0], true
	}
	var tagged []jsonField
	for _, f := range top {
		if f.tagged {
			tagged = append(tagged, f)
		}
	}
	if len(tagged) == 1 {
		return tagged[0], true
	}
	return jsonField{}, false
}

// validTagName is encoding/json's rule for a usable tag name.
func validTagName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		switch {
		case strings.ContainsRune("!#$%&()*+-./:;<=>?@[]^_{|}~ ", c):
		case !unicode.IsLetter(c) && !unicode.IsDigit(c):
			return false
		}
	}
	return true
}

// checkKeys checks the object keys of b, a JSON value encoding/json has
// already decoded into a value of type t (so b is well-formed).
func checkKeys(b []byte, t reflect.Type) *envelope.Error {
	s := shapeOf(t)
	if s == nil {
		return nil
	}
	w := keyWalker{b: b}
	p := w.value(s)
	if p == nil {
		return nil
	}
	if p.malformed {
		return invalidInput("malformed JSON: bad object key", nil)
	}
	slices.Reverse(p.path)
	field := strings.Join(p.path, ".")
	return &envelope.Error{Code: 400, Reason: "invalid_input", Message: field + ": " + p.problem, Details: map[string]any{"field": field}}
}

// keyProblem is what checkKeys found wrong; the path (innermost key
// first) is built as the walk unwinds, so the walk itself keeps no path.
type keyProblem struct {
	path      []string
	problem   string
	malformed bool
}

// keyWalker scans well-formed JSON. Every step consumes input, so the walk
// is bounded by the payload's length (and its depth by encoding/json's
// nesting limit, which the decode already enforced).
type keyWalker struct {
	b []byte
	i int
}

func (w *keyWalker) space() {
	for w.i < len(w.b) && (w.b[w.i] == ' ' || w.b[w.i] == '\t' || w.b[w.i] == '\n' || w.b[w.i] == '\r') {
		w.i++
	}
}

func (w *keyWalker) value(s *keyShape) *keyProblem {
	w.space()
	if w.i >= len(w.b) {
		return nil
	}
	switch w.b[w.i] {
	case '{':
		return w.object(s)
	case '[':
		return w.array(s)
	case '"':
		w.str()
	default: // number, true, false, null
		for w.i < len(w.b) {
			switch w.b[w.i] {
			case ',', ']', '}', ' ', '\t', '\n', '\r':
				return nil
			}
			w.i++
		}
	}
	return nil
}

// str skips a string and returns its raw content (without the quotes)
// and whether it has escapes.
func (w *keyWalker) str() (raw []byte, escaped bool) {
	w.i++ // opening quote
	start := w.i
	for w.i < len(w.b) {
		switch w.b[w.i] {
		case '\\':
			escaped = true
			w.i += 2
			continue
		case '"':
			raw = w.b[start:w.i]
			w.i++
			return raw, escaped
		}
		w.i++
	}
	return w.b[start:], escaped
}

func (w *keyWalker) array(s *keyShape) *keyProblem {
	var elem *keyShape
	if s != nil {
		elem = s.elem
	}
	w.i++ // '['
	for {
		w.space()
		if w.i >= len(w.b) || w.b[w.i] == ']' {
			w.i++
			return nil
		}
		if err := w.value(elem); err != nil {
			return err
		}
		w.space()
		if w.i < len(w.b) && w.b[w.i] == ',' {
			w.i++
		}
	}
}

func (w *keyWalker) object(s *keyShape) *keyProblem {
	var small [2]uint64 // seen fields of a struct, by index
	seen := small[:]
	if s != nil && s.fields != nil && len(s.fields) > 128 {
		seen = make([]uint64, (len(s.fields)+63)/64)
	}
	var mapKeys map[string]struct{} // seen keys of a map
	w.i++                           // '{'
	for {
		w.space()
		if w.i >= len(w.b) || w.b[w.i] == '}' {
			w.i++
			return nil
		}
		key, escaped := w.str() // no string conversions on the common path
		if escaped {
			var k string
			if err := json.Unmarshal(w.b[w.i-len(key)-2:w.i], &k); err != nil {
				return &keyProblem{malformed: true}
			}
			key = []byte(k)
		}
		w.space()
		w.i++ // ':'
		var next *keyShape
		switch {
		case s == nil:
		case s.isMap:
			if _, dup := mapKeys[string(key)]; dup {
				return &keyProblem{path: []string{string(key)}, problem: "duplicate field"}
			}
			if mapKeys == nil {
				mapKeys = map[string]struct{}{}
			}
			mapKeys[string(key)] = struct{}{}
			next = s.elem
		default:
			f, ok := s.fields[string(key)]
			if !ok {
				problem := "unknown field"
				if exact, ok := s.folded[strings.ToLower(string(key))]; ok {
					problem += fmt.Sprintf(" (names are case-sensitive: did you mean %q?)", exact)
				}
				return &keyProblem{path: []string{string(key)}, problem: problem}
			}
			word, bit := f.index/64, uint64(1)<<(f.index%64)
			if seen[word]&bit != 0 {
				return &keyProblem{path: []string{string(key)}, problem: "duplicate field"}
			}
			seen[word] |= bit
			next = f.shape
		}
		if p := w.value(next); p != nil {
			p.path = append(p.path, string(key))
			return p
		}
		w.space()
		if w.i < len(w.b) && w.b[w.i] == ',' {
			w.i++
		}
	}
}
