package router_test

import (
	"strings"
	"testing"

	"github.com/switchboard-go/switchboard/router"
)

func TestNames(t *testing.T) {
	t.Parallel()
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

func TestValidReplyTopic(t *testing.T) {
	t.Parallel()
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
