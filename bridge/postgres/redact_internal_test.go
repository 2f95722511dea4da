package postgres

import (
	"strings"
	"testing"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/bridgetest"
)

// TestParseErrorsHideThePassword runs the backend's own URL checks on every
// URL shape that parses: no error and no address shown in logs holds the
// password.
func TestParseErrorsHideThePassword(t *testing.T) {
	const secret = "S3CRETPW"
	for _, scheme := range []string{"postgres", "postgresql"} {
		for _, raw := range bridgetest.URLsWithPassword(scheme, secret) {
			u, err := bridge.ParseURL(raw) // what bridge.Open checks first
			if err != nil {
				continue // bridge.Open refuses these itself; its own test covers them
			}
			c, err := parseURL(u)
			if err != nil && strings.Contains(err.Error(), secret) {
				t.Errorf("parseURL: %v", err)
			}
			if strings.Contains(c.addr, secret) {
				t.Errorf("address for logs %s shows the password", c.addr)
			}
		}
	}
}
