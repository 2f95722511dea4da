package mqtt

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxClientIDPrefix bounds the client_id parameter.
const maxClientIDPrefix = 64

// reservedRoot is the first topic level of every topic this backend uses
// for itself (redelivery, health); no router topic may start with it.
const reservedRoot = "_sb"

// mqttTopic maps a router topic to an MQTT topic name: each dot-separated
// token becomes a topic level ("email.v1.sendWelcome" →
// "email/v1/sendWelcome"). It refuses what MQTT cannot name or would read
// as something else: empty tokens, '/', the wildcards '+' and '#', control
// characters, a leading '$' (broker topics) and the reserved root.
func mqttTopic(topic string) (string, error) {
	if topic == "" {
		return "", errors.New("empty topic")
	}
	if !utf8.ValidString(topic) {
		return "", fmt.Errorf("topic %q is not UTF-8", topic)
	}
	if len(topic) > 4096 {
		return "", fmt.Errorf("topic of %d bytes (at most 4096)", len(topic))
	}
	toks := strings.Split(topic, ".")
	for _, tok := range toks {
		if tok == "" {
			return "", fmt.Errorf("topic %q has an empty dot-separated token", topic)
		}
		if !validLevel(tok) {
			return "", fmt.Errorf("topic %q contains '/', '+', '#' or a control character, which MQTT topic levels cannot hold", topic)
		}
	}
	if strings.HasPrefix(topic, "$") || toks[0] == reservedRoot {
		return "", fmt.Errorf("topic %q starts with '$' or %q, reserved", topic, reservedRoot)
	}
	return strings.Join(toks, "/"), nil
}

// validLevel reports whether s can be one MQTT topic level (or a shared
// subscription's share name): no '/', no wildcard, no control character.
func validLevel(s string) bool {
	for _, r := range s {
		if r == '/' || r == '+' || r == '#' || unicode.IsControl(r) || r == utf8.RuneError {
			return false
		}
	}
	return s != ""
}

// retryTopic is where a group's redeliveries go: a topic of its own, so
// that a nacked event comes back to the nacking group only.
func retryTopic(group, mqttTopic string) string {
	return reservedRoot + "/retry/" + group + "/" + mqttTopic
}

// shortHash is 8 hex digits of the SHA-256 of the parts, NUL-separated.
func shortHash(parts ...string) string {
	h := sha256.New()
	for i, p := range parts {
		if i > 0 {
			h.Write([]byte{0})
		}
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil)[:4])
}
