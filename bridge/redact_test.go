package bridge_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bridge"
	_ "github.com/switchboard-go/switchboard/bridge/all"
	"github.com/switchboard-go/switchboard/bridge/bridgetest"
)

// TestOpenNeverShowsThePassword opens every URL shape, on every scheme, and
// checks the password is in no error and in no redacted form.
func TestOpenNeverShowsThePassword(t *testing.T) {
	const secret = "S3CRETPW"
	for _, scheme := range append(bridge.Schemes(), "nosuch") {
		for _, raw := range bridgetest.URLsWithPassword(scheme, secret) {
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			b, err := bridge.Open(ctx, raw)
			cancel()
			if err == nil {
				_ = b.Close()
				if scheme != "gochannel" { // the in-process backend ignores everything
					t.Errorf("Open(%q) succeeded", bridge.Redact(raw))
				}
				continue
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("Open: the error shows the password: %v", err)
			}
			if !errors.Is(err, bridge.ErrBadURL) && !errors.Is(err, bridge.ErrUnreachable) && !errors.Is(err, bridge.ErrUnknownScheme) {
				t.Errorf("Open: %v, want ErrBadURL, ErrUnreachable or ErrUnknownScheme", err)
			}
			if s := bridge.Redact(raw); strings.Contains(s, secret) {
				t.Errorf("Redact shows the password: %s", s)
			}
		}
	}
}

func TestOpenBadURLSaysWhatIsWrong(t *testing.T) {
	_, err := bridge.Open(t.Context(), "nats://app:S3CRETPW@[::1")
	if !errors.Is(err, bridge.ErrBadURL) || !strings.Contains(err.Error(), "missing ']' in host") {
		t.Errorf("Open: %v, want ErrBadURL naming the problem", err)
	}
	if got := bridge.Redact("postgres://app@h/db?sslmode=disable&password=pw"); strings.Contains(got, "pw") || !strings.Contains(got, "sslmode=disable") {
		t.Errorf("Redact: %s, want the password parameter hidden and the others kept", got)
	}
}

// TestRedactKeepsTheURLsShape: a redacted URL reads as the user wrote it,
// "//" included when it has no host, and so do Open's errors.
func TestRedactKeepsTheURLsShape(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]string{
		"gochannel://":                         "gochannel://",
		"gochannel://?x=1":                     "gochannel://?x=1",
		"gochannel://name?x=1":                 "gochannel://name?x=1",
		"postgres:///db?password=pw":           "postgres:///db?password=xxxxx",
		"postgres://app:pw@h:5432/db":          "postgres://app:xxxxx@h:5432/db",
		"nats://127.0.0.1:4222?ack_wait=30s":   "nats://127.0.0.1:4222?ack_wait=30s",
		"nats:user:pw@host":                    "nats:<opaque URL hidden>",
		"amqp://guest:pw@127.0.0.1:5672/vhost": "amqp://guest:xxxxx@127.0.0.1:5672/vhost",
	} {
		if got := bridge.Redact(raw); got != want {
			t.Errorf("Redact(%q) = %q, want %q", raw, got, want)
		}
	}
	_, err := bridge.Open(t.Context(), "gochannel://?x=1")
	if err == nil || !strings.Contains(err.Error(), "gochannel://?x=1") {
		t.Errorf("Open(gochannel://?x=1): %v, want an error quoting the URL as written", err)
	}
	_, err = bridge.ParseURL("gochannel://?x=1#frag")
	if err == nil || !strings.Contains(err.Error(), "gochannel://<URL hidden") {
		t.Errorf("ParseURL with a fragment: %v, want the URL hidden after gochannel://", err)
	}
}
