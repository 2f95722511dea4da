package outbox_test

import (
	"strings"
	"testing"

	"github.com/switchboard-go/switchboard/bridge/bridgetest"
	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/outbox"
)

// TestRelayDBPasswordNeverShown: Relay.Validate (and so Run) refuses the
// database URLs whose password the driver would quote, without quoting it.
func TestRelayDBPasswordNeverShown(t *testing.T) {
	const secret = "S3CRETPW"
	for _, raw := range bridgetest.URLsWithPassword("postgres", secret) {
		err := outbox.Relay{DB: raw, Target: inproc.New(inproc.Options{})}.Validate()
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("Validate: %v", err)
		}
	}
	for _, raw := range []string{"postgres://app:12/" + secret + "@127.0.0.1:1/db", "postgres://app:12#" + secret + "@127.0.0.1:1/db"} {
		if err := (outbox.Relay{DB: raw, Target: inproc.New(inproc.Options{})}).Validate(); err == nil {
			t.Errorf("Validate accepted a URL whose password the driver would show in every reconnect log")
		}
	}
}
