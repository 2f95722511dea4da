package outbox_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bridge/bridgetest"
	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/outbox"
)

// TestRelayDatabaseURLPasswordNeverShown: Relay.Validate (and so Run) refuses the
// database URLs whose password the driver would quote, without quoting it.
func TestRelayDatabaseURLPasswordNeverShown(t *testing.T) {
	const secret = "S3CRETPW"
	for _, raw := range bridgetest.URLsWithPassword("postgres", secret) {
		err := outbox.Relay{DatabaseURL: raw, Target: inproc.New()}.Validate()
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("Validate: %v", err)
		}
	}
	for _, raw := range []string{"postgres://app:12/" + secret + "@127.0.0.1:1/db", "postgres://app:12#" + secret + "@127.0.0.1:1/db"} {
		if err := (outbox.Relay{DatabaseURL: raw, Target: inproc.New()}).Validate(); err == nil {
			t.Errorf("Validate accepted a URL whose password the driver would show in every reconnect log")
		}
	}
}

// TestRelayLogsHideAPasswordWithAnAt: a password with an unescaped '@' parses
// in net/url (which splits at the last '@') but pgx split at the first, so
// every reconnect log quoted the rest of the password as the host.
func TestRelayLogsHideAPasswordWithAnAt(t *testing.T) {
	const secret = "S3CRETPW"
	var logs testenv.LogBuffer
	r := outbox.Relay{
		DatabaseURL: "postgres://app:12@" + secret + "@127.0.0.1:1/db?connect_timeout=1",
		Target:      inproc.New(),
		Logger:      slog.New(slog.NewTextHandler(&logs, nil)),
		LeaderPoll:  50 * time.Millisecond,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := r.Run(ctx); err != nil && strings.Contains(err.Error(), secret) {
		t.Errorf("Run: %v", err)
	}
	if out := logs.String(); strings.Contains(out, secret) || out == "" {
		t.Errorf("logs show the password, or nothing failed:\n%s", out)
	}
}

// TestRelayRefusesAURLOfAnotherScheme: pgx reads a URL of another scheme
// (a bridge URL given as DatabaseURL by mistake) as a keyword/value string, and the
// server's error, logged on every reconnect, quoted it whole.
func TestRelayRefusesAURLOfAnotherScheme(t *testing.T) {
	const secret = "S3CRETPW"
	for _, raw := range []string{"nats://app:" + secret + "@127.0.0.1:1/?token=" + secret, "http://app:" + secret + "@127.0.0.1:1/"} {
		var logs testenv.LogBuffer
		r := outbox.Relay{DatabaseURL: raw, Target: inproc.New(),
			Logger: slog.New(slog.NewTextHandler(&logs, nil)), LeaderPoll: 50 * time.Millisecond}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err := r.Run(ctx)
		cancel()
		if err == nil || strings.Contains(err.Error()+logs.String(), secret) {
			t.Errorf("Run accepted a URL of another scheme, or showed the password: %v\n%s", err, logs.String())
		}
	}
}
