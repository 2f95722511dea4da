package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/switchboard-go/switchboard/internal/codec"
)

// Validator is implemented by payload types that check themselves. Validate
// runs on the caller's side before a message is sent and again on the
// handler's side before the handler runs; return Invalid(field, problem) to
// name the field.
type Validator interface {
	Validate() error // nil when the value is valid
}

// payloadCodec is the engine's JSON policy: sizes, validation, and strict
// decoding (package internal/codec).
type payloadCodec struct {
	maxBytes           int
	allowUnknownFields bool
}

// encodeInput encodes and validates a payload the caller is about to send.
// v is a pointer to the payload, so pointer-receiver Validate methods run.
func (c payloadCodec) encodeInput(v any) ([]byte, error) {
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
func (c payloadCodec) decodeInput(b []byte, v any, allowUnknown bool) error {
	if len(b) > c.maxBytes {
		return with(ErrPayloadTooLarge, fmt.Sprintf("payload is %d bytes, the limit is %d", len(b), c.maxBytes), map[string]any{"limit": c.maxBytes, "size": len(b)})
	}
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		return invalidInput("empty payload", nil)
	}
	if err := codec.Decode(trimmed, v, !allowUnknown && !c.allowUnknownFields); err != nil {
		return err
	}
	return validate(v)
}

// decodeOutput decodes a handler's result. It is lenient about unknown
// fields: a service may add fields before its callers know them.
func (c payloadCodec) decodeOutput(b []byte, v any) error {
	if err := codec.Unmarshal(b, v); err != nil {
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

// invalidInput is a 400 with reason "invalid_input", like Invalid but
// without a field.
func invalidInput(message string, details map[string]any) *Error {
	return &Error{Code: 400, Reason: "invalid_input", Message: message, Details: details}
}

// scratch recycles the *T that encoding and decoding a payload need: a
// value whose address goes to encoding/json (an interface) is moved to
// the heap, one allocation per message, however short-lived. get returns
// a zero T; put zeroes it again, so that nothing decoded stays reachable
// from the pool, and must come after the last use of the pointer (the
// value is copied out first). Encoding and decoding see a *T as before.
type scratch[T any] struct{ pool sync.Pool }

func (s *scratch[T]) get() *T {
	if v, ok := s.pool.Get().(*T); ok {
		return v
	}
	return new(T)
}

func (s *scratch[T]) put(v *T) {
	var zero T
	*v = zero
	s.pool.Put(v)
}

// encodeInput is c.encodeInput of v, through a recycled *T.
func (s *scratch[T]) encodeInput(c payloadCodec, v T) ([]byte, error) {
	p := s.get()
	*p = v
	b, err := c.encodeInput(p)
	s.put(p)
	return b, err
}

// decodeInput is c.decodeInput of b into a recycled *T; it returns the
// value decoded.
func (s *scratch[T]) decodeInput(c payloadCodec, b []byte, allowUnknown bool) (T, error) {
	p := s.get()
	err := c.decodeInput(b, p, allowUnknown)
	v := *p
	s.put(p)
	return v, err
}

// decodeOutput is c.decodeOutput of b into a recycled *T; it returns the
// value decoded.
func (s *scratch[T]) decodeOutput(c payloadCodec, b []byte) (T, error) {
	p := s.get()
	err := c.decodeOutput(b, p)
	v := *p
	s.put(p)
	return v, err
}
