// Package codec is Switchboard's strict JSON decoding, shared by the engine
// (a handler's input) and the HTTP gateway (a request's input) so that both
// refuse the same payloads with the same errors: a 400 *envelope.Error with
// reason "invalid_input" whose Details["field"] names the offending field.
package codec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"

	"github.com/switchboard-go/switchboard/internal/envelope"
)

// DecodeStrict decodes the JSON payload into v the way handlers' input is
// decoded: unknown fields, keys that match a field only in another case,
// keys repeated in one object, and trailing data are refused, and a failure
// is a 400 *envelope.Error whose Details["field"] names the offending field
// (a dotted path for a nested one, "addr.city"). It neither validates nor
// checks sizes.
func DecodeStrict(payload []byte, v any) error {
	if err := Decode(payload, v, true); err != nil {
		return err
	}
	return nil
}

// Decode decodes the JSON value b into v, refusing trailing data. When
// strict, it also refuses what DecodeStrict refuses; otherwise object keys
// match fields as encoding/json matches them. A failure is a 400
// *envelope.Error (nil on success).
func Decode(b []byte, v any, strict bool) *envelope.Error {
	// Most payloads are valid: decodeRecycled decodes them as json.Unmarshal
	// would, without a new Decoder's reader, buffer and copy of b (three
	// allocations and twice the payload's size) nor json.Unmarshal's own
	// decoder state. A payload it accepts has no trailing data, and
	// checkKeys refuses every key the Decoder would call unknown, so it is
	// accepted below too. Any failure is decoded again the Decoder's way, so
	// that which error a payload with several problems gets stays the same.
	if decodeRecycled(b, v) && (!strict || checkKeys(b, reflect.TypeOf(v)) == nil) {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalidInput("unexpected data after the JSON value", nil)
	}
	if strict {
		return checkKeys(b, reflect.TypeOf(v))
	}
	return nil
}

func decodeError(err error) *envelope.Error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return invalidInput("malformed JSON: "+syn.Error(), map[string]any{"offset": syn.Offset})
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "(root)"
		}
		return &envelope.Error{Code: 400, Reason: "invalid_input", Message: fmt.Sprintf("%s: want %s, got JSON %s", field, jsonKind(typ.Type), typ.Value), Details: map[string]any{"field": field}}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalidInput("malformed JSON: unexpected end of input", nil)
	}
	msg := err.Error()
	if f, ok := bytes.CutPrefix([]byte(msg), []byte("json: unknown field ")); ok {
		name := string(bytes.Trim(f, `"`))
		return &envelope.Error{Code: 400, Reason: "invalid_input", Message: name + ": unknown field", Details: map[string]any{"field": name}}
	}
	return invalidInput("malformed JSON: "+msg, nil)
}

// jsonKind names the JSON a Go type expects.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t.Implements(textUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler), t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Bool:
		return "a boolean"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "an integer"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "a number"
	case t.Kind() == reflect.Slice || t.Kind() == reflect.Array:
		return "an array"
	case t.Kind() == reflect.Struct || t.Kind() == reflect.Map:
		return "an object"
	}
	return t.String()
}

// invalidInput is a 400 with reason "invalid_input" and no field.
func invalidInput(message string, details map[string]any) *envelope.Error {
	return &envelope.Error{Code: 400, Reason: "invalid_input", Message: message, Details: details}
}
