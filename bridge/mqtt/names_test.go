package mqtt

import "testing"

func TestMQTTTopic(t *testing.T) {
	for topic, want := range map[string]string{
		"email.v1.sendWelcome": "email/v1/sendWelcome",
		"event.user.created":   "event/user/created",
		"reply.inst-1_a":       "reply/inst-1_a",
		"single":               "single",
	} {
		if got, err := mqttTopic(topic); err != nil || got != want {
			t.Errorf("mqttTopic(%q) = %q, %v; want %q", topic, got, err, want)
		}
	}
	for _, topic := range []string{"", ".a", "a.", "a..b", "a.+", "a.#.b", "a/b", "$SYS.broker", "_sb.retry.x", "a.b\n", "\xff"} {
		if got, err := mqttTopic(topic); err == nil {
			t.Errorf("mqttTopic(%q) = %q, want an error", topic, got)
		}
	}
}
