package router

import (
	"fmt"
	"regexp"
	"strings"
)

var eventRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,62}(\.[A-Za-z][A-Za-z0-9_-]{0,62}){0,7}$`)
var versionRE = regexp.MustCompile(`^[0-9]{1,6}$`)

// ValidName checks a service or command name: a letter, then up to 62
// letters, digits, '_' or '-'. A service may not be named "event" or
// "reply" (in any case): its command topics would share a namespace with
// event topics ("event.v1.x" is also event "v1.x") or reply topics.
func ValidName(kind, s string) error {
	if !validName(s) {
		return fmt.Errorf("invalid %s name %q: want a letter followed by up to 62 letters, digits, '_' or '-'", kind, s)
	}
	if kind == "service" && (strings.EqualFold(s, "event") || strings.EqualFold(s, "reply")) {
		return fmt.Errorf("invalid service name %q: reserved for event and reply topics", s)
	}
	return nil
}

// ValidVersion checks a service version: 1 to 6 decimal digits ("1", "2").
func ValidVersion(s string) error {
	if !versionRE.MatchString(s) {
		return fmt.Errorf("invalid version %q: want decimal digits such as \"1\"", s)
	}
	return nil
}

// ValidEventName checks an event name: dot-separated names ("user.created").
func ValidEventName(s string) error {
	if !eventRE.MatchString(s) {
		return fmt.Errorf("invalid event name %q: want dot-separated names such as \"user.created\"", s)
	}
	return nil
}

// ServiceID is "<service>.v<version>", the consumer group of a service's
// commands and the prefix of everything it owns.
func ServiceID(service, version string) string { return service + ".v" + version }

// CommandTopic is the topic of one command: "<service>.v<version>.<command>".
func CommandTopic(service, version, command string) string {
	return ServiceID(service, version) + "." + command
}

// EventTopic is the topic of an event: "event.<name>".
func EventTopic(name string) string { return "event." + name }

// ReplyPrefix starts every reply topic.
const ReplyPrefix = "reply."

// ReplyTopic is the topic of one engine instance's replies: "reply.<instance>".
func ReplyTopic(instance string) string { return ReplyPrefix + instance }

// ValidReplyTopic checks a topic a reply is about to be sent to (a
// request's reply_to, which comes from the wire): ReplyPrefix followed by a
// valid instance name (see ValidName), which every backend accepts as a
// topic (no wildcard, space or dot for NATS, the characters PostgreSQL's
// topics allow, well under AMQP's 255 bytes). Anything else — another
// service's command topic, an event topic — is refused, so that a forged
// reply_to cannot make one service send its result to another's command.
func ValidReplyTopic(topic string) error {
	inst, ok := strings.CutPrefix(topic, ReplyPrefix)
	if !ok || !validName(inst) {
		return fmt.Errorf("invalid reply topic %q: want %q followed by a letter and up to 62 letters, digits, '_' or '-'", clip(topic), ReplyPrefix)
	}
	return nil
}

// validName: a letter, then up to 62 letters, digits, '_' or '-'. No
// regexp: it runs on every awaited command (ValidReplyTopic).
func validName(s string) bool {
	if len(s) == 0 || len(s) > 63 || !isLetter(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isLetter(c) && !(c >= '0' && c <= '9') && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// clip shortens a value from the wire for an error message.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// EventGroup is the consumer group of one subscription: the service id, plus
// the subscription's name when a service has several for one event.
func EventGroup(service, version, subscription string) string {
	g := ServiceID(service, version)
	if subscription != "" {
		g += "." + subscription
	}
	return g
}
