package nats

import (
	"regexp"
	"strings"
	"testing"
)

var validName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func TestNames(t *testing.T) {
	long := strings.Repeat("segment.", 40) + "end"
	topics := []string{"email.v1.sendWelcome", "email_v1_sendWelcome", "event.user.created", "reply.inst-1", "ünïcode.topic", long}
	seen := map[string]string{}
	for _, topic := range topics {
		s := streamName("SB_", topic)
		if s != streamName("SB_", topic) {
			t.Fatalf("streamName(%q) is not deterministic", topic)
		}
		if !validName.MatchString(s) || len(s) > 3+maxNamePart+9 {
			t.Errorf("streamName(%q) = %q: invalid or too long", topic, s)
		}
		if prev, dup := seen[s]; dup {
			t.Errorf("topics %q and %q share stream %q", prev, topic, s)
		}
		seen[s] = topic
	}
	if got := streamName("SB_", "email.v1.sendWelcome"); !strings.HasPrefix(got, "SB_email_v1_sendWelcome_") {
		t.Errorf("streamName = %q, want a readable prefix", got)
	}
	c1, c2 := consumerName("t.a", "svc.v1"), consumerName("t.b", "svc.v1")
	if c1 == c2 || !validName.MatchString(c1) || !strings.HasPrefix(c1, "svc_v1_") {
		t.Errorf("consumer names %q, %q", c1, c2)
	}
	if consumerName("t", "svc.v1") == consumerName("t", "svc_v1") {
		t.Error("groups that sanitize alike share a consumer")
	}
}

func TestValidSubject(t *testing.T) {
	for _, ok := range []string{"a", "email.v1.sendWelcome", "event.user.created", "reply.x-y_z"} {
		if err := validSubject(ok); err != nil {
			t.Errorf("validSubject(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a..b", ".a", "a.", "a.*", "a.>", "a b", "a\tb", "a\x00b"} {
		if validSubject(bad) == nil {
			t.Errorf("validSubject(%q) accepted", bad)
		}
	}
}
