package amqp

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/bridgetest"
)

// TestParseErrorsHideThePassword runs the backend's own URL checks on every
// URL shape that parses: no error shows the password.
func TestParseErrorsHideThePassword(t *testing.T) {
	const secret = "S3CRETPW"
	for _, scheme := range []string{"amqp", "amqps"} {
		for _, raw := range bridgetest.URLsWithPassword(scheme, secret) {
			u, err := bridge.ParseURL(raw) // what bridge.Open checks first
			if err != nil {
				continue // bridge.Open refuses these itself; its own test covers them
			}
			if _, err := parseURL(u); err != nil && strings.Contains(err.Error(), secret) {
				t.Errorf("parseURL: %v", err)
			}
		}
	}
}

func TestErrorTextSaidOnce(t *testing.T) {
	inner := &amqp091.Error{Code: amqp091.FrameError, Reason: "frame could not be parsed"}
	doubled := &amqp091.Error{Code: amqp091.FrameError, Reason: inner.Error()}
	got := undoubled(fmt.Errorf("publish: %w", doubled)).Error()
	if want := `Exception (501) Reason: "frame could not be parsed"`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	var nilErr *amqp091.Error
	if undoubled(nilErr) == nil || undoubled(errors.New("x")).Error() != "x" {
		t.Error("other errors must pass unchanged")
	}
}
