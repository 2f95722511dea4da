package engine

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/switchboard-go/switchboard/internal/envelope"
	"github.com/switchboard-go/switchboard/middleware"
)

// Error is an error that crosses the wire as data. A handler returns one (or
// wraps one) to answer with a code, a message and optional details; the
// caller's Invoke returns an equal *Error, testable with errors.As, and with
// errors.Is against the sentinels below (matching is by Code, and by Reason
// when the sentinel has one). Any other error a handler returns, and any
// panic, reaches the caller as a 500 "internal" error that names the failed
// message but leaks nothing else; the service logs the original (with the
// stack for a panic).
//
// Error is a struct with these fields (a reply carries them as a JSON
// object, under the names in quotes, and the "error" metadata entry "1"):
//   - Code int: an HTTP status: 4xx for errors the caller must fix (never
//     retried; Permanent reports it), 5xx for failures on the service side
//     ("code").
//   - Reason string: a stable machine-readable word that refines a code
//     covering several situations, such as "timeout", "no_handler" or
//     "circuit_open"; may be empty ("reason").
//   - Message string: for humans ("message").
//   - Details map[string]any: optional structured details; a caller reads
//     back what JSON allows: strings, bools, nil, map[string]any, []any,
//     integral numbers as int and other numbers as float64 ("details").
//
// Its methods: Error formats it ("404 Not Found (reason): message"), Is
// matches by Code and, when the target has one, Reason, and Permanent
// reports whether retrying cannot help (every 4xx except 408 and 429).
type Error = envelope.Error

// Sentinels for errors.Is. Handlers can return them directly, or build a
// richer *Error with NewError or Invalid.
var (
	// ErrInvalidInput: the payload failed decoding or validation (400).
	ErrInvalidInput = &Error{Code: http.StatusBadRequest, Message: "invalid input"}
	// ErrUnauthorized: no or bad credentials (401).
	ErrUnauthorized = &Error{Code: http.StatusUnauthorized, Message: "unauthorized"}
	// ErrForbidden: the principal may not do this (403).
	ErrForbidden = &Error{Code: http.StatusForbidden, Message: "forbidden"}
	// ErrNotFound: the thing asked for does not exist (404).
	ErrNotFound = &Error{Code: http.StatusNotFound, Message: "not found"}
	// ErrConflict: the request conflicts with current state (409).
	ErrConflict = &Error{Code: http.StatusConflict, Message: "conflict"}
	// ErrPayloadTooLarge: the payload exceeds the engine's limit
	// (Engine.MaxPayloadBytes), or the message what the bridge carries (413).
	ErrPayloadTooLarge = &Error{Code: http.StatusRequestEntityTooLarge, Message: "payload too large"}
	// ErrMetadataTooLarge: the message's metadata exceeds its limits: 64
	// entries, 4 KiB per entry (key plus value), 16 KiB in all (431).
	ErrMetadataTooLarge = &Error{Code: http.StatusRequestHeaderFieldsTooLarge, Message: "metadata too large"}
	// ErrUnprocessable: well-formed input the business rules refuse (422).
	ErrUnprocessable = &Error{Code: http.StatusUnprocessableEntity, Message: "unprocessable"}
	// ErrInternal: an unexpected error or a panic in a handler (500).
	ErrInternal = &Error{Code: http.StatusInternalServerError, Reason: "internal", Message: "internal error"}
	// ErrUnavailable matches every 503: no handler, unreachable, circuit
	// open, shutting down.
	ErrUnavailable = &Error{Code: http.StatusServiceUnavailable, Message: "service unavailable"}
	// ErrNoHandler: nothing consumes the command (detected at once on
	// backends whose Capabilities.DetectsMissingHandler is true; elsewhere
	// the call times out).
	ErrNoHandler = &Error{Code: http.StatusServiceUnavailable, Reason: "no_handler", Message: "no handler registered"}
	// ErrUnreachable: the bridge could not publish the request, or New
	// could not reach the backend (that error matches
	// bridge.ErrUnreachable too).
	ErrUnreachable = &Error{Code: http.StatusServiceUnavailable, Reason: "unreachable", Message: "service unreachable"}
	// ErrCircuitOpen: a circuit breaker refused the call without trying
	// (503, reason "circuit_open"; the same value as
	// middleware.ErrCircuitOpen, which the consumer-side breaker returns).
	ErrCircuitOpen = middleware.ErrCircuitOpen
	// ErrShuttingDown: the caller's engine stopped before the reply came,
	// or the handler's engine stopped it before it finished (its drain ran
	// out): the handler may have done part of its work.
	ErrShuttingDown = &Error{Code: http.StatusServiceUnavailable, Reason: "shutting_down", Message: "engine shutting down"}
	// ErrTimeout: no reply before the deadline (504).
	ErrTimeout = &Error{Code: http.StatusGatewayTimeout, Reason: "timeout", Message: "timed out"}
)

// ErrScheduleNotFound: no scheduled message has that id (unknown,
// cancelled, or already handed to the bridge), from Schedules().Cancel and
// Reschedule (404, reason "schedule_not_found").
var ErrScheduleNotFound = &Error{Code: http.StatusNotFound, Reason: "schedule_not_found", Message: "no such scheduled message"}

// ErrNoScheduler is returned by Schedule, Schedules' Cancel and
// Reschedule, and by Register for a recurring schedule (Every), on an
// engine with no Scheduler (Config.Scheduler) on a broker: only the
// in-process bus has a default, in memory.
var ErrNoScheduler = errors.New("switchboard: no scheduler: set Config.Scheduler (outbox.Scheduler keeps scheduled messages in PostgreSQL)")

// ErrNoEngine is returned by Invoke, Send and Emit when ctx carries no
// engine: call them from a handler, or with a context from WithEngine.
var ErrNoEngine = errors.New("switchboard: context carries no engine (call from a handler, or use engine.WithEngine)")

// NewError returns an *Error with code and a formatted message.
func NewError(code int, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalid returns a 400 error naming the offending field; Validate methods
// return it so callers (and the HTTP gateway) can point at the field.
func Invalid(field, problem string) *Error {
	return &Error{
		Code:    http.StatusBadRequest,
		Reason:  "invalid_input",
		Message: field + ": " + problem,
		Details: map[string]any{"field": field},
	}
}

// with returns a copy of sentinel with message and details.
func with(sentinel *Error, message string, details map[string]any) *Error {
	return &Error{Code: sentinel.Code, Reason: sentinel.Reason, Message: message, Details: details}
}
