package mqtt

import (
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"time"

	"github.com/switchboard-go/switchboard/bridge/internal/params"
)

// Defaults of the URL parameters (see the package documentation).
const (
	// DefaultSessionExpiry is how long the broker keeps a durable member's
	// session (its subscriptions, unacknowledged and queued messages) after
	// its connection ends: with a client_id (see "Sessions").
	DefaultSessionExpiry = time.Hour
	// DefaultEphemeralSessionExpiry is the same without a client_id: how
	// long a lost connection may take to come back without losing its
	// session, and how long a crashed process's sessions hold their share
	// of their groups' messages before the broker drops them.
	DefaultEphemeralSessionExpiry = time.Minute
	// DefaultKeepAlive is the MQTT keep-alive: a silently dead connection
	// is noticed within about 1.5 times it.
	DefaultKeepAlive = 10 * time.Second
)

// options are the parsed URL parameters.
type options struct {
	clientID      string // member identities start with it
	stableID      bool   // clientID came from the URL
	sessionExpiry time.Duration
	keepAlive     time.Duration
}

// processID names this process's members when the URL gives no client_id:
// random, so that two processes never take over each other's sessions.
var processID = func() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return "sb" + hex.EncodeToString(b)
}()

func parseOptions(u *url.URL) (options, error) {
	r := params.New("mqtt", u)
	o := options{
		clientID: r.String("client_id", "", func(v string) string {
			if v == "" || len(v) > maxClientIDPrefix || !validLevel(v) {
				return "is not 1 to 64 characters without '/', '+', '#' or control characters"
			}
			return ""
		}),
		keepAlive: r.Duration("keep_alive", DefaultKeepAlive, time.Second, 0xFFFF*time.Second),
	}
	o.stableID = o.clientID != ""
	def := DefaultEphemeralSessionExpiry
	if o.stableID {
		def = DefaultSessionExpiry
	}
	o.sessionExpiry = r.Duration("session_expiry", def, time.Second, 0xFFFFFFFE*time.Second)
	if !o.stableID {
		o.clientID = processID
	}
	return o, r.Err()
}
