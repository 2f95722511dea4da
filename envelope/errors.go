package envelope

import (
	"encoding/json"
	"fmt"
	"net/http"
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
func UnmarshalError(b []byte) *Error {
	var e Error
	if err := json.Unmarshal(b, &e); err != nil || e.Code < 400 || e.Code > 599 {
		return &Error{Code: http.StatusBadGateway, Reason: "bad_reply", Message: "malformed error reply"}
	}
	return &e
}
