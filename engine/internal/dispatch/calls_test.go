package dispatch_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/engine/internal/dispatch"
	"github.com/switchboard-go/switchboard/internal/envelope"
)

func TestCallsDeliversOnceByRequestID(t *testing.T) {
	calls := dispatch.NewCalls()
	reply, _ := calls.Expect("req-1")
	other, _ := calls.Expect("req-2")
	defer calls.Forget("req-2", other)
	if _, ok := calls.Expect("req-1"); ok {
		t.Fatal("a second call with a waiting call's id was registered")
	}
	r := message.NewMessage("rep", nil)
	r.Metadata.Set(envelope.KeyCausationID, "req-1")
	if !calls.Deliver(r) {
		t.Fatal("reply to a waiting call not delivered")
	}
	if got := <-reply; got != r {
		t.Error("wrong reply")
	}
	if calls.Deliver(r) {
		t.Error("a second reply to the same call was delivered")
	}
	calls.Forget("req-1", reply)
	if calls.Len() != 1 {
		t.Errorf("%d pending, want 1", calls.Len())
	}
	late := message.NewMessage("late", nil)
	late.Metadata.Set(envelope.KeyCausationID, "req-gone")
	if calls.Deliver(late) {
		t.Error("a reply nobody waits for was delivered")
	}
}
