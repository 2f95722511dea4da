package router

import (
	"fmt"
	"regexp"
)

var nameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,62}$`)
var eventRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,62}(\.[A-Za-z][A-Za-z0-9_-]{0,62}){0,7}$`)
var versionRE = regexp.MustCompile(`^[0-9]{1,6}$`)

// ValidName checks a service or command name: a letter, then up to 62
// letters, digits, '_' or '-'.
func ValidName(kind, s string) error {
	if !nameRE.MatchString(s) {
		return fmt.Errorf("invalid %s name %q: want a letter followed by up to 62 letters, digits, '_' or '-'", kind, s)
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

// ReplyTopic is the topic of one engine instance's replies: "reply.<instance>".
func ReplyTopic(instance string) string { return "reply." + instance }

// EventGroup is the consumer group of one subscription: the service id, plus
// the subscription's name when a service has several for one event.
func EventGroup(service, version, subscription string) string {
	g := ServiceID(service, version)
	if subscription != "" {
		g += "." + subscription
	}
	return g
}
