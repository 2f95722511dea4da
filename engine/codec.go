package engine

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
)

// Validator is implemented by payload types that check themselves. Validate
// runs on the caller's side before a message is sent and again on the
// handler's side before the handler runs; return Invalid(field, problem) to
// name the field.
type Validator interface {
	Validate() error
}

// codec is the engine's JSON policy.
type codec struct {
	maxBytes           int
	allowUnknownFields bool
}

// encodeInput encodes and validates a payload the caller is about to send.
// v is a pointer to the payload, so pointer-receiver Validate methods run.
func (c codec) encodeInput(v any) ([]byte, error) {
	if err := validate(v); err != nil {
		return nil, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, invalidInput("payload is not JSON-serialisable: "+err.Error(), nil)
	}
	if len(b) > c.maxBytes {
		return nil, with(ErrPayloadTooLarge, fmt.Sprintf("payload is %d bytes, the limit is %d", len(b), c.maxBytes), map[string]any{"limit": c.maxBytes, "size": len(b)})
	}
	return b, nil
}

// decodeInput decodes a received payload strictly into v and validates it.
// Every failure is an *Error with code 400 or 413.
func (c codec) decodeInput(b []byte, v any, allowUnknown bool) error {
	if len(b) > c.maxBytes {
		return with(ErrPayloadTooLarge, fmt.Sprintf("payload is %d bytes, the limit is %d", len(b), c.maxBytes), map[string]any{"limit": c.maxBytes, "size": len(b)})
	}
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		return invalidInput("empty payload", nil)
	}
	if err := decodeJSON(trimmed, v, !allowUnknown && !c.allowUnknownFields); err != nil {
		return err
	}
	return validate(v)
}

// DecodeStrict decodes the JSON payload into v the way handlers' input is
// decoded: unknown fields, keys that match a field only in another case,
// keys repeated in one object, and trailing data are refused, and a failure
// is a 400 *Error whose Details["field"] names the offending field (a
// dotted path for a nested one, "addr.city"). It neither
// validates nor checks sizes. Gateways that build a command's input from
// other sources (an HTTP request) use it to answer exactly as the engine
// would.
func DecodeStrict(payload []byte, v any) error {
	if err := decodeJSON(payload, v, true); err != nil {
		return err
	}
	return nil
}

func decodeJSON(b []byte, v any, strict bool) *Error {
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

// decodeOutput decodes a handler's result. It is lenient about unknown
// fields: a service may add fields before its callers know them.
func (c codec) decodeOutput(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return &Error{Code: 502, Reason: "bad_reply", Message: "cannot decode the result: " + err.Error()}
	}
	return nil
}

func validate(v any) error {
	val, ok := v.(Validator)
	if !ok {
		return nil
	}
	err := val.Validate()
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return invalidInput(err.Error(), nil)
}

func decodeError(err error) *Error {
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
		return &Error{Code: 400, Reason: "invalid_input", Message: fmt.Sprintf("%s: want %s, got JSON %s", field, jsonKind(typ.Type), typ.Value), Details: map[string]any{"field": field}}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalidInput("malformed JSON: unexpected end of input", nil)
	}
	msg := err.Error()
	if f, ok := bytes.CutPrefix([]byte(msg), []byte("json: unknown field ")); ok {
		name := string(bytes.Trim(f, `"`))
		return &Error{Code: 400, Reason: "invalid_input", Message: name + ": unknown field", Details: map[string]any{"field": name}}
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

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// invalidInput is a 400 with reason "invalid_input", like Invalid but
// without a field.
func invalidInput(message string, details map[string]any) *Error {
	return &Error{Code: 400, Reason: "invalid_input", Message: message, Details: details}
}
