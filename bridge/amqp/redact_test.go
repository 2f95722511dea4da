package amqp

import (
	"net/url"
	"strings"
	"testing"

	"github.com/switchboard-go/switchboard/bridge/bridgetest"
)

// TestParseErrorsHideThePassword runs the backend's own URL checks on every
// URL shape that parses: no error shows the password.
func TestParseErrorsHideThePassword(t *testing.T) {
	const secret = "S3CRETPW"
	for _, scheme := range []string{"amqp", "amqps"} {
		for _, raw := range bridgetest.URLsWithPassword(scheme, secret) {
			u, err := url.Parse(raw)
			if err != nil {
				continue // bridge.Open's own test covers these
			}
			if _, err := parseURL(u); err != nil && strings.Contains(err.Error(), secret) {
				t.Errorf("parseURL: %v", err)
			}
		}
	}
}
