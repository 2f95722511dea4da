package envelope

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
)

// Error is an error that crosses the wire as data: a handler returns it (or
// wraps it), the caller receives an equal *Error from Invoke.
//
// Code follows HTTP status semantics: 4xx for errors the caller must fix
// (never retried), 5xx for failures on the service side. Reason refines a
// code with a stable machine-readable word ("timeout", "no_handler",
// "circuit_open", …) when one code covers several situations.
//
// errors.Is(err, target) holds when target is an *Error with the same Code
// and either no Reason or the same Reason: errors.Is(err, ErrUnavailable)
// matches every 503, errors.Is(err, ErrCircuitOpen) only an open circuit.
//
// Details cross the wire as JSON: see UnmarshalError for the types a
// caller reads back (integral numbers as int, other numbers as float64).
type Error struct {
	Code    int            `json:"code"`
	Reason  string         `json:"reason,omitempty"`
	Message string         `json:"message"`
	Details map[string]any `json:"details,omitempty"`
}

// Error implements error.
func (e *Error) Error() string {
	text := http.StatusText(e.Code)
	if text == "" {
		text = fmt.Sprintf("code %d", e.Code)
	}
	s := fmt.Sprintf("%d %s", e.Code, text)
	if e.Reason != "" {
		s += " (" + e.Reason + ")"
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Is implements errors.Is matching by Code and, when target has one, Reason.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok {
		return false
	}
	return t.Code == e.Code && (t.Reason == "" || t.Reason == e.Reason)
}

// Permanent reports whether retrying cannot help: every 4xx except 408
// (request timeout) and 429 (too many requests).
func (e *Error) Permanent() bool {
	return e.Code >= 400 && e.Code < 500 && e.Code != http.StatusRequestTimeout && e.Code != http.StatusTooManyRequests
}

// MarshalError encodes e for a reply payload.
func MarshalError(e *Error) []byte {
	b, err := json.Marshal(e)
	if err != nil { // details that do not encode: drop them, keep the rest
		b, _ = json.Marshal(&Error{Code: e.Code, Reason: e.Reason, Message: e.Message})
	}
	return b
}

// UnmarshalError decodes a reply payload written by MarshalError. A payload
// that is not one yields a 502 error saying so.
//
// Details come back as JSON allows: strings, bools, nil, map[string]any
// and []any; a number written as an integer (no fraction or exponent) that
// fits an int reads back as int (so a handler's int, int64 or uint of that
// range does), any other number as float64, and one beyond float64's range
// as a string of its digits. Other Go types (structs, time.Time, typed
// slices) come back in their JSON form.
func UnmarshalError(b []byte) *Error {
	var e Error
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	err := dec.Decode(&e)
	if err != nil || len(bytes.TrimSpace(b[dec.InputOffset():])) > 0 || e.Code < 400 || e.Code > 599 {
		return &Error{Code: http.StatusBadGateway, Reason: "bad_reply", Message: "malformed error reply"}
	}
	for k, v := range e.Details {
		e.Details[k] = numbers(v)
	}
	return &e
}

// numbers replaces the json.Numbers in v (decoded with UseNumber) by int
// or float64. The depth of v is bounded by encoding/json's nesting limit.
func numbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 0); err == nil {
			return int(i)
		}
		if f, err := x.Float64(); err == nil {
			return f
		}
		return string(x) // out of float64's range: keep the digits
	case map[string]any:
		for k, e := range x {
			x[k] = numbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = numbers(e)
		}
	}
	return v
}
