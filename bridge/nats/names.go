package nats

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// maxNamePart bounds the readable part of a stream or consumer name; the
// hash suffix keeps truncated names unique.
const maxNamePart = 64

// sanitize maps s to the characters JetStream accepts in stream and consumer
// names everywhere (letters, digits, '-' and '_'): every other rune becomes
// '_'. The result is cut to maxNamePart bytes.
func sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= maxNamePart {
			break
		}
	}
	return b.String()
}

// shortHash is 8 hex digits of the SHA-256 of the parts, separated by NUL
// so that ("a", "bc") and ("ab", "c") differ.
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

// streamName is the name of the stream this backend creates for topic:
// prefix + sanitized topic + "_" + hash of the topic. It is deterministic,
// so every process computes the same name, and the hash keeps topics that
// sanitize alike ("a.b" and "a_b") apart.
func streamName(prefix, topic string) string {
	return prefix + sanitize(topic) + "_" + shortHash(topic)
}

// consumerName is the durable name of group's consumer on topic: sanitized
// group + "_" + hash of topic and group. The topic is part of the hash
// because a stream found by subject may hold several topics (an operator's
// wildcard stream), and one group consuming two of them needs two consumers.
func consumerName(topic, group string) string {
	return sanitize(group) + "_" + shortHash(topic, group)
}

// validSubject reports why topic cannot be used as a literal NATS subject:
// it must be non-empty, made of non-empty dot-separated tokens, without
// wildcards ('*', '>'), whitespace or control characters.
func validSubject(topic string) error {
	if topic == "" {
		return errors.New("empty topic")
	}
	for _, r := range topic {
		if r == '*' || r == '>' || unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("topic %q contains %q, which NATS subjects do not allow", topic, r)
		}
	}
	for _, tok := range strings.Split(topic, ".") {
		if tok == "" {
			return fmt.Errorf("topic %q has an empty dot-separated token", topic)
		}
	}
	return nil
}
