package nats

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/internal/params"
)

// Defaults of the URL parameters (see the package documentation).
const (
	// DefaultAckWait is the server's AckWait: how long a delivered message
	// may stay unacknowledged before JetStream delivers it again.
	DefaultAckWait = 30 * time.Second
	// DefaultStreamPrefix starts the name of every stream this backend creates.
	DefaultStreamPrefix = "SB_"
	// DefaultReplyPrefix marks reply topics: the publisher never creates a
	// stream for a topic that starts with it, whatever reply_prefix says
	// (the engine's reply topics start with it; see the package
	// documentation).
	DefaultReplyPrefix = "reply."
	// DefaultPrefetch is how many messages a subscription holds beyond its
	// Concurrency (?prefetch=): fetched ahead and handed to the handlers in
	// order as they finish, so the next message is ready without a round
	// trip. The same parameter, with the same meaning and default, on the
	// NATS, RabbitMQ and PostgreSQL backends.
	DefaultPrefetch = 16
)

// Bounds of the parameters.
const (
	maxPrefetch = 10000
	minAckWait  = 100 * time.Millisecond // progress is reported every ack_wait/2
	maxAckWait  = 24 * time.Hour
	maxMaxAge   = 100 * 365 * 24 * time.Hour
)

// options are the parsed URL parameters.
type options struct {
	ackWait      time.Duration
	streamPrefix string
	replyPrefix  string
	retention    jetstream.RetentionPolicy
	maxAge       time.Duration
	replicas     int
	prefetch     int
}

// parseOptions reads u's query; every problem is reported, wrapped with
// bridge.ErrBadURL.
func parseOptions(u *url.URL) (options, error) {
	r := params.New("nats", u)
	o := options{
		ackWait:      r.Duration("ack_wait", DefaultAckWait, minAckWait, maxAckWait),
		streamPrefix: r.String("stream_prefix", DefaultStreamPrefix, streamPrefixProblem),
		replyPrefix:  r.String("reply_prefix", DefaultReplyPrefix, replyPrefixProblem),
		maxAge:       r.Duration("max_age", 0, 0, maxMaxAge),
		replicas:     r.Int("replicas", 1, 1, 5),
		prefetch:     r.Int("prefetch", DefaultPrefetch, 0, maxPrefetch),
		retention:    jetstream.LimitsPolicy,
	}
	if r.String("retention", "limits", func(v string) string {
		if v != "limits" && v != "interest" {
			return "is neither limits nor interest"
		}
		return ""
	}) == "interest" {
		o.retention = jetstream.InterestPolicy
	}
	return o, r.Err()
}

// streamPrefixProblem says why p cannot start stream names: only the
// characters sanitize keeps, at most maxNamePart of them.
func streamPrefixProblem(p string) string {
	if sanitize(p) != p || len(p) > maxNamePart {
		return fmt.Sprintf("has characters other than letters, digits, '-' and '_', or more than %d", maxNamePart)
	}
	return ""
}

// replyPrefixProblem says why p cannot be the reply_prefix parameter: it
// must be non-empty (an empty one would let a reply create a durable
// stream), at most maxNamePart bytes, and a valid start of a subject:
// dot-separated tokens of letters, digits, '-' and '_', where only the
// last may be empty ("reply." or "reply").
func replyPrefixProblem(p string) string {
	if p == "" {
		return "is empty: replies would create durable streams"
	}
	if len(p) > maxNamePart {
		return fmt.Sprintf("is longer than %d bytes", maxNamePart)
	}
	toks := strings.Split(p, ".")
	for i, tok := range toks {
		if tok == "" && i < len(toks)-1 {
			return "has an empty dot-separated token"
		}
		if sanitize(tok) != tok {
			return "has characters other than letters, digits, '-', '_' and '.'"
		}
	}
	return ""
}

// serverURL returns the URL handed to nats.go (scheme, credentials, host;
// no query) and its redacted form for messages.
func serverURL(u *url.URL) (server, shown string, err error) {
	if u.Opaque != "" || u.Host == "" {
		return "", "", fmt.Errorf("%w: want nats://host:port[?params], got %q", bridge.ErrBadURL, bridge.Redact(u.String()))
	}
	if u.Path != "" && u.Path != "/" {
		return "", "", fmt.Errorf("%w: unexpected path %q (want nats://host:port[?params])", bridge.ErrBadURL, u.Path)
	}
	if u.Fragment != "" {
		return "", "", fmt.Errorf("%w: unexpected fragment %q", bridge.ErrBadURL, u.Fragment)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", "", fmt.Errorf("%w: bad port %q", bridge.ErrBadURL, p)
		}
	}
	s := url.URL{Scheme: "nats", User: u.User, Host: u.Host}
	return s.String(), bridge.Redact(s.String()), nil
}
