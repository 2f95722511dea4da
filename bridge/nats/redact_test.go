package nats

import (
	"strings"
	"testing"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/bridgetest"
)

// TestOptionErrorsHideThePassword runs the backend's own URL checks on
// every URL shape that parses: no error shows the password.
func TestOptionErrorsHideThePassword(t *testing.T) {
	const secret = "S3CRETPW"
	for _, raw := range bridgetest.URLsWithPassword("nats", secret) {
		u, err := bridge.ParseURL(raw) // what bridge.Open checks first
		if err != nil {
			continue // bridge.Open refuses these itself; its own test covers them
		}
		_, oerr := parseOptions(u)
		_, shown, serr := serverURL(u)
		for _, s := range []string{errString(oerr), errString(serr), shown} {
			if strings.Contains(s, secret) {
				t.Errorf("%s shows the password", s)
			}
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
