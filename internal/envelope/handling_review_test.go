package envelope_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/internal/envelope"
)

// Defect: a handler context ended by End before its deadline, whose
// cancellation was never made, reports context.DeadlineExceeded (Err and
// Cause) when first asked after the deadline has passed: make builds a
// context.WithDeadline with the deadline already past, which ends with
// DeadlineExceeded before End's cancel is applied. A context.WithDeadline
// cancelled before its deadline stays context.Canceled for good. A
// goroutine the handler left running sees a timeout that never happened.
func TestReviewErrAfterEndBeforeDeadline(t *testing.T) {
	t.Parallel()
	d := time.Now().Add(50 * time.Millisecond)
	h := envelope.Handling(context.Background(), envelope.Meta{Deadline: d}, &envelope.Scope{Stop: context.Background()})
	ref, cancelRef := context.WithDeadline(context.Background(), d)
	h.End()
	cancelRef() // the reference ends as h does: cancelled before d

	passed, cancel := context.WithDeadline(context.Background(), d) // the event "d has passed"
	defer cancel()
	select {
	case <-passed.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("deadline never passed")
	}
	if !errors.Is(ref.Err(), context.Canceled) {
		t.Fatalf("reference Err = %v", ref.Err())
	}
	if err := h.Err(); !errors.Is(err, context.Canceled) {
		t.Errorf("Err after End (before the deadline), asked after the deadline = %v, want %v (as context.WithDeadline)", err, ref.Err())
	}
	if cause := context.Cause(h); !errors.Is(cause, context.Canceled) {
		t.Errorf("Cause = %v, want %v", cause, context.Cause(ref))
	}
}

// Defect: a handler context whose deadline passed and whose Scope.Stop
// ended afterwards, its cancellation never made, reports context.Canceled:
// make builds context.WithDeadline(Stop, deadline) only then, and the
// already ended parent wins over the past deadline. A context.WithDeadline
// of Stop made at the start would have ended at the deadline, with
// DeadlineExceeded, before Stop ended: a handler timing out is reported as
// cancelled by the hard stop.
func TestReviewErrDeadlineThenStop(t *testing.T) {
	t.Parallel()
	stopCtx, stop := context.WithCancel(context.Background())
	defer stop()
	d := time.Now().Add(50 * time.Millisecond)
	h := envelope.Handling(context.Background(), envelope.Meta{Deadline: d}, &envelope.Scope{Stop: stopCtx})
	defer h.End()
	ref, cancelRef := context.WithDeadline(stopCtx, d)
	defer cancelRef()
	select {
	case <-ref.Done(): // the deadline came, Stop still runs
	case <-time.After(10 * time.Second):
		t.Fatal("deadline never passed")
	}
	stop()
	if !errors.Is(ref.Err(), context.DeadlineExceeded) {
		t.Fatalf("reference Err = %v", ref.Err())
	}
	if err := h.Err(); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Err after the deadline then the stop = %v, want %v (as context.WithDeadline of Stop)", err, ref.Err())
	}
}
