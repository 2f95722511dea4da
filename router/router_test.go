package router_test

import (
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/envelope"
	"github.com/switchboard-go/switchboard/router"
)

func TestNames(t *testing.T) {
	if got := router.CommandTopic("email", "1", "sendWelcome"); got != "email.v1.sendWelcome" {
		t.Errorf("CommandTopic = %q", got)
	}
	if got := router.EventTopic("user.created"); got != "event.user.created" {
		t.Errorf("EventTopic = %q", got)
	}
	if got := router.EventGroup("email", "2", ""); got != "email.v2" {
		t.Errorf("EventGroup = %q", got)
	}
	if got := router.EventGroup("email", "2", "audit"); got != "email.v2.audit" {
		t.Errorf("EventGroup with a name = %q", got)
	}
	for _, bad := range []string{"", "1abc", "has space", "dot.ted", "x" + string(make([]byte, 63)), "event", "Reply"} {
		if router.ValidName("service", bad) == nil {
			t.Errorf("ValidName accepted %q", bad)
		}
	}
	for _, bad := range []string{"", "v1", "1.2", "1234567"} {
		if router.ValidVersion(bad) == nil {
			t.Errorf("ValidVersion accepted %q", bad)
		}
	}
	if router.ValidName("command", "event") != nil {
		t.Error("ValidName refused a command named event: only service names are reserved")
	}
	if router.ValidEventName("user.created") != nil || router.ValidEventName("user..created") == nil || router.ValidEventName(".x") == nil {
		t.Error("ValidEventName")
	}
}

func TestCallsDeliversOnceByRequestID(t *testing.T) {
	calls := router.NewCalls()
	reply, forget := calls.Expect("req-1")
	_, forget2 := calls.Expect("req-2")
	defer forget2()
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
	forget()
	if calls.Len() != 1 {
		t.Errorf("%d pending, want 1", calls.Len())
	}
	late := message.NewMessage("late", nil)
	late.Metadata.Set(envelope.KeyCausationID, "req-gone")
	if calls.Deliver(late) {
		t.Error("a reply nobody waits for was delivered")
	}
}

func TestValidReplyTopic(t *testing.T) {
	for _, ok := range []string{router.ReplyTopic("i1"), "reply.abc_DEF-9", "reply." + strings.Repeat("x", 63)} {
		if err := router.ValidReplyTopic(ok); err != nil {
			t.Errorf("ValidReplyTopic(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "reply.", "reply", "billing.v1.charge", "event.user.created", "reply.a b", "reply.*", "reply.>",
		"reply.a.b", "reply.1abc", "reply.é", "reply.a\x00", "reply." + strings.Repeat("x", 64), "REPLY.abc", "xreply.abc"} {
		if router.ValidReplyTopic(bad) == nil {
			t.Errorf("ValidReplyTopic accepted %q", bad)
		}
	}
}
