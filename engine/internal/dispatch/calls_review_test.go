package dispatch_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/engine/internal/dispatch"
	"github.com/switchboard-go/switchboard/internal/envelope"
)

// Defect: Forget removes whatever call waits under requestID, not only the
// one whose reply channel it is given. With engine.WithMessageID two calls
// may use one id one after the other: the first's reply is delivered
// (Deliver removes it), a second call with the id registers, and the
// first caller's Forget (deferred in callOnce, still to run) then removes
// the second's registration. The second call's reply is dropped as
// unexpected and the caller waits until its timeout.
func TestReviewForgetRemovesALaterCallWithTheSameID(t *testing.T) {
	calls := dispatch.NewCalls()
	first, ok := calls.Expect("run-1/step-1")
	if !ok {
		t.Fatal("first Expect refused")
	}
	r1 := message.NewMessage("rep-1", nil)
	r1.Metadata.Set(envelope.KeyCausationID, "run-1/step-1")
	if !calls.Deliver(r1) {
		t.Fatal("first reply not delivered")
	}
	<-first
	second, ok := calls.Expect("run-1/step-1") // the retry, the first call not yet forgotten
	if !ok {
		t.Fatal("second Expect refused although the first call has its reply")
	}
	defer calls.Forget("run-1/step-1", second)
	calls.Forget("run-1/step-1", first) // the first caller's deferred Forget

	r2 := message.NewMessage("rep-2", nil)
	r2.Metadata.Set(envelope.KeyCausationID, "run-1/step-1")
	if !calls.Deliver(r2) {
		t.Fatal("the second call's reply was dropped: the first call's Forget removed the second's registration")
	}
	if got := <-second; got != r2 {
		t.Error("wrong reply")
	}
}
