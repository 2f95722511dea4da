package middleware_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/switchboard-go/switchboard/internal/envelope"
	"github.com/switchboard-go/switchboard/middleware"
)

func TestPermanent(t *testing.T) {
	t.Parallel()
	if middleware.Permanent(nil) != nil {
		t.Error("Permanent(nil) != nil")
	}
	if middleware.IsPermanent(nil) {
		t.Error("IsPermanent(nil)")
	}
	p := middleware.Permanent(errTransient)
	if !middleware.IsPermanent(p) {
		t.Error("Permanent(err) is not permanent")
	}
	if middleware.IsPermanent(errTransient) {
		t.Error("a plain error is permanent")
	}
	if p.Error() != errTransient.Error() {
		t.Errorf("Permanent changed the message: %q", p.Error())
	}
	if !errors.Is(p, errTransient) {
		t.Error("Permanent(err) does not unwrap to err")
	}
	wrapped := fmt.Errorf("outer: %w", fmt.Errorf("inner: %w", p))
	if !middleware.IsPermanent(wrapped) {
		t.Error("wrapping with the w verb of fmt.Errorf lost permanence")
	}
	if !middleware.IsPermanent(errors.Join(errTransient, p)) {
		t.Error("errors.Join with a permanent error lost permanence")
	}
	if middleware.IsPermanent(fmt.Errorf("formatted, not wrapped: %v", p)) {
		t.Error("formatting with the v verb (not w) must not keep permanence")
	}
	for code, want := range map[int]bool{400: true, 401: true, 403: true, 404: true, 409: true, 422: true, 408: false, 429: false, 500: false, 503: false, 504: false} {
		err := fmt.Errorf("call: %w", &envelope.Error{Code: code})
		if got := middleware.IsPermanent(err); got != want {
			t.Errorf("IsPermanent(%d) = %v, want %v", code, got, want)
		}
	}
	if middleware.IsPermanent(middleware.ErrCircuitOpen) {
		t.Error("ErrCircuitOpen is permanent")
	}
}
