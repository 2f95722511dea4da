package main

import (
	"strings"
	"testing"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/bridgetest"
)

// TestBridgeURLPasswordNeverShown: `health --bridge URL` with every URL
// shape, on every scheme, prints no password.
func TestBridgeURLPasswordNeverShown(t *testing.T) {
	t.Parallel()
	const secret = "S3CRETPW"
	for _, scheme := range bridge.Schemes() {
		if scheme == "gochannel" {
			continue
		}
		for _, raw := range bridgetest.URLsWithPassword(scheme, secret) {
			code, out, errOut := cli(t, "health", "--bridge", raw, "--connect-timeout", "3s")
			if code == 0 || strings.Contains(out+errOut, secret) {
				t.Errorf("health --bridge %s: exit %d, output shows the password or nothing failed:\n%s%s", bridge.Redact(raw), code, out, errOut)
			}
		}
	}
}

// TestDatabaseURLPasswordNeverShown: `dlq list --db URL` with every URL
// shape prints no password.
func TestDatabaseURLPasswordNeverShown(t *testing.T) {
	t.Parallel()
	const secret = "S3CRETPW"
	for _, scheme := range []string{"postgres", "postgresql"} {
		for _, raw := range bridgetest.URLsWithPassword(scheme, secret) {
			code, out, errOut := cli(t, "dlq", "list", "--db", raw)
			if code == 0 || strings.Contains(out+errOut, secret) {
				t.Errorf("dlq list --db %s: exit %d, output shows the password or nothing failed:\n%s%s", bridge.Redact(raw), code, out, errOut)
			}
		}
	}
}

// TestDatabaseURLOfAnotherSchemeIsRefused: pgx reads a URL of another scheme
// (a bridge URL passed to --db by mistake) as a keyword/value string, and
// the server's error quoted it whole, password included.
func TestDatabaseURLOfAnotherSchemeIsRefused(t *testing.T) {
	t.Parallel()
	const secret = "S3CRETPW"
	for _, scheme := range []string{"nats", "amqp", "gochannel", "http"} {
		for _, raw := range bridgetest.URLsWithPassword(scheme, secret) {
			code, out, errOut := cli(t, "dlq", "list", "--db", raw)
			if code == 0 || strings.Contains(out+errOut, secret) {
				t.Errorf("dlq list --db %s: exit %d, output shows the password or nothing failed:\n%s%s", bridge.Redact(raw), code, out, errOut)
			}
		}
	}
}
