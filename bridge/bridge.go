package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Kind is the delivery semantics a subscription asks for.
type Kind int

const (
	// Command subscriptions compete: each message goes to one member of the group.
	Command Kind = iota + 1
	// Event subscriptions fan out: each group gets one copy, its members compete.
	Event
	// Reply subscriptions belong to one engine instance and are not durable.
	Reply
)

// String returns the kind's lower-case name.
func (k Kind) String() string {
	switch k {
	case Command:
		return "command"
	case Event:
		return "event"
	case Reply:
		return "reply"
	default:
		return fmt.Sprintf("kind(%d)", int(k))
	}
}

// Spec describes one subscription the engine needs.
type Spec struct {
	// Topic is the topic to consume, as named by package router.
	Topic string
	// Group is the consumer group: members of one group compete for messages,
	// different groups each get every message (Event) or share the topic
	// (Command). For Reply subscriptions it is the owning instance's id.
	Group string
	// Kind selects the delivery semantics.
	Kind Kind
	// Concurrency is how many messages this subscription may have in flight
	// (delivered, not yet acked) at once: at least 1 (Validate refuses
	// less). The engine sets it on every subscription it makes.
	Concurrency int
}

// Validate reports every problem with the spec.
func (s Spec) Validate() error {
	var errs []error
	if s.Topic == "" {
		errs = append(errs, errors.New("bridge: spec: empty topic"))
	}
	if s.Group == "" {
		errs = append(errs, errors.New("bridge: spec: empty group"))
	}
	if s.Kind < Command || s.Kind > Reply {
		errs = append(errs, fmt.Errorf("bridge: spec: unknown kind %d", int(s.Kind)))
	}
	if s.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("bridge: spec: Concurrency is %d, want at least 1", s.Concurrency))
	}
	return errors.Join(errs...)
}

// Metadata keys shared by the engine and the backends.
const (
	// DeliveryKey is set by a backend on every message it delivers: "1" on
	// the first delivery to a group, incremented each time the same message
	// is delivered to that group again (after a Nack or an expired ack
	// deadline). Backends declare Capabilities.CountsDeliveries.
	DeliveryKey = "_delivery"
	// NackDelayKey may be set by the consumer on a delivered message before
	// it calls Nack, to ask for redelivery after that duration (Go syntax,
	// e.g. "1.5s") instead of DefaultNackDelay. The engine sets it on every
	// nack of a failed message (its Reliability.Redelivery). The redelivery goes to the
	// same group only. Backends declare Capabilities.NackDelay.
	NackDelayKey = "_nack_delay"
)

// DefaultNackDelay is how long every backend keeps a message nacked without
// a delay of its own (no NackDelayKey: a plain Watermill handler's error, a
// message handed back during a drain) before delivering it again. It is
// the first wait of the engine's default redelivery backoff
// (middleware.DefaultRedelivery), so the two tiers agree; it is long
// enough that a handler failing on every delivery costs one delivery a
// second instead of spinning (the in-process and NATS backends waited
// 50 ms, PostgreSQL 100 ms: twenty and ten deliveries a second); and it is
// the retry queue TTL the AMQP backend already declared, so existing
// RabbitMQ queues keep their arguments. It is not a URL parameter: a
// consumer that wants another delay says so on the message.
const DefaultNackDelay = time.Second

// NackDelay returns the delay requested on a nacked message's metadata with
// NackDelayKey, or DefaultNackDelay.
func NackDelay(md map[string]string) time.Duration {
	if v, ok := md[NackDelayKey]; ok {
		if d, err := time.ParseDuration(v); err == nil && d >= 0 {
			return d
		}
	}
	return DefaultNackDelay
}

// Capabilities declares the real differences between backends. The
// conformance suite reads them, and the engine reads MaxMessageBytes.
type Capabilities struct {
	// Durable: messages survive a restart of the process (and of the broker).
	Durable bool
	// DetectsMissingHandler: publishing a command nobody consumes fails at once
	// with ErrNoSubscriber instead of waiting for a timeout.
	DetectsMissingHandler bool
	// CrossProcess: engines in different OS processes can talk through it.
	CrossProcess bool
	// GroupOutlivesMembers: a group keeps its messages while it has no
	// member, so what is published to it meanwhile, and what its last
	// member hands back as it closes, waits for the next member. Without
	// it a group exists only while it has members: a member closing hands
	// back to the others, and with none left its messages are dropped.
	GroupOutlivesMembers bool
	// CountsDeliveries: delivered messages carry DeliveryKey.
	CountsDeliveries bool
	// NackDelay: a Nack honours NackDelayKey.
	NackDelay bool
	// MaxMessageBytes is the largest message the backend carries: payload
	// plus the bytes of the metadata's keys and values (the backend keeps
	// room for its own framing of up to 64 entries). 0: no limit of its
	// own. The engine takes it into account in its payload limit; a larger
	// message fails to publish with ErrTooLarge.
	MaxMessageBytes int
}

// Bridge is one connection to a backend.
//
// Publisher and every Subscriber it returns stay usable until Close. Closing
// a subscriber returned by Subscriber must not close the bridge or the
// publisher (Watermill's router closes the subscribers it was given).
type Bridge interface {
	// Name is the backend's scheme, such as "gochannel" or "nats".
	Name() string
	// Publisher returns the shared publisher. Its Close is a no-op: the
	// bridge owns it and closes it in Close.
	Publisher() message.Publisher
	// Subscriber returns a new subscriber for spec. Subscribe on it must be
	// called with spec.Topic.
	Subscriber(ctx context.Context, spec Spec) (message.Subscriber, error)
	// Health reports whether the backend is reachable now.
	Health(ctx context.Context) error
	// Capabilities declares what this backend guarantees.
	Capabilities() Capabilities
	// Close releases every connection. It is safe to call more than once.
	Close() error
}

// Opener opens a bridge from a parsed URL, logging to log (never nil).
type Opener func(ctx context.Context, u *url.URL, log *slog.Logger) (Bridge, error)

// OpenOption configures one Open call.
type OpenOption func(*openConfig)

type openConfig struct{ log *slog.Logger }

// Logger makes the bridge log to l instead of slog.Default() (the engine
// passes its Config.Logger). A nil l is ignored.
func Logger(l *slog.Logger) OpenOption {
	return func(c *openConfig) {
		if l != nil {
			c.log = l
		}
	}
}

// Errors returned by Open and by backends.
var (
	// ErrUnknownScheme: no backend is registered for the URL's scheme.
	ErrUnknownScheme = errors.New("bridge: unknown scheme")
	// ErrBadURL: the URL could not be parsed or has invalid parameters.
	ErrBadURL = errors.New("bridge: bad URL")
	// ErrUnreachable: the backend could not be reached.
	ErrUnreachable = errors.New("bridge: backend unreachable")
	// ErrNoSubscriber: a message was published to a topic nobody consumes
	// (only backends with Capabilities.DetectsMissingHandler return it).
	ErrNoSubscriber = errors.New("bridge: no subscriber for topic")
	// ErrClosed: the bridge was closed.
	ErrClosed = errors.New("bridge: closed")
	// ErrTooLarge: the message exceeds what the backend carries (see
	// Capabilities.MaxMessageBytes). Retrying cannot help.
	ErrTooLarge = errors.New("bridge: message too large for the backend")
	// ErrRefused: the backend cannot carry the message as it is (a topic it
	// cannot name, metadata it cannot encode, data it cannot store).
	// Retrying cannot help.
	ErrRefused = errors.New("bridge: message refused by the backend")
)

var (
	registryMu sync.RWMutex
	registry   = map[string]Opener{}
)

// Register makes a backend available under scheme. Backends call it from
// their package's init; registering a scheme twice panics.
func Register(scheme string, open Opener) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[scheme]; dup {
		panic("bridge: scheme registered twice: " + scheme)
	}
	registry[scheme] = open
}

// Schemes lists the registered schemes, sorted.
func Schemes() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	out := make([]string, 0, len(registry))
	for s := range registry {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// Open opens the bridge named by rawURL, within ctx: a backend that cannot
// be reached fails with ErrUnreachable when ctx ends, if not sooner. The
// empty string means the in-process backend ("gochannel://"). No error it
// returns shows a password: URLs appear redacted (see Redact), and a URL
// that does not parse is described without being quoted. A URL with a
// fragment or with an '@' after its host (a password with an unescaped
// '#', '?' or '/') is refused with ErrBadURL (see ParseURL).
func Open(ctx context.Context, rawURL string, opts ...OpenOption) (Bridge, error) {
	cfg := openConfig{log: slog.Default()}
	for _, o := range opts {
		o(&cfg)
	}
	if strings.TrimSpace(rawURL) == "" {
		rawURL = "gochannel://"
	}
	u, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	registryMu.RLock()
	open, ok := registry[u.Scheme]
	registryMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w %q (registered: %s; import the backend package, e.g. bridge/all)", ErrUnknownScheme, u.Scheme, strings.Join(Schemes(), ", "))
	}
	b, err := open(ctx, u, cfg.log)
	if err != nil {
		return nil, fmt.Errorf("bridge %s (%s): %w", u.Scheme, Redact(rawURL), err)
	}
	return b, nil
}

// ParseURL parses a URL that may hold a password, as Open does: no error
// it returns shows any part of it. It fails with ErrBadURL when the URL
// does not parse, has no scheme (a "host=… password=…" string, say), or
// has a fragment or an '@' after its host (a password with an unescaped
// '#', '?' or '/', whose tail would be read as a fragment, query or path).
func ParseURL(rawURL string) (*url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: the URL does not parse: %s", ErrBadURL, parseProblem(err))
	}
	if u.Scheme == "" {
		return nil, fmt.Errorf("%w: the URL has no scheme (want one of %s)", ErrBadURL, strings.Join(Schemes(), ", "))
	}
	if misplacedUserinfo(u) {
		return nil, fmt.Errorf("%w: %s: %s", ErrBadURL, Redact(rawURL), misplacedProblem)
	}
	return u, nil
}

// parseProblem says what is wrong with a URL url.Parse refused, without
// any part of it: *url.Error quotes the whole URL, and its inner errors
// quote the offending part (a port, an escape, a host), which may be the
// password itself ("nats://user:pw" makes "pw" the port).
func parseProblem(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var esc url.EscapeError
	var host url.InvalidHostError
	switch msg := err.Error(); {
	case errors.As(err, &esc):
		return "invalid percent-escape"
	case errors.As(err, &host):
		return "invalid character in the host"
	case strings.HasPrefix(msg, "invalid port"):
		return "invalid port"
	case !strings.Contains(msg, `"`): // net/url's fixed messages quote nothing (it quotes with %q)
		return msg
	default:
		return "malformed URL"
	}
}

// secretParams are query parameters Redact hides: pgx, for one, reads the
// password from "?password=".
var secretParams = []string{"pass", "pwd", "secret", "token", "key", "cred"}

// SecretParam reports whether a URL query parameter's name suggests a
// secret (password, sslpassword, pwd, token, key…): Redact hides its value,
// and so must every message that would quote it.
func SecretParam(name string) bool {
	lname := strings.ToLower(name)
	for _, s := range secretParams {
		if strings.Contains(lname, s) {
			return true
		}
	}
	return false
}

// misplacedProblem explains why Open refuses a URL misplacedUserinfo finds.
const misplacedProblem = "a fragment, or an '@' after the host: percent-encode '@', '/', '?' and '#' in the user and password (%40, %2F, %3F, %23)"

// misplacedUserinfo reports whether u has a fragment (no backend uses one)
// or an '@' after its host: signs of a password with an unescaped '#', '?'
// or '/', whose tail url.Parse then reads as a fragment, query or path.
func misplacedUserinfo(u *url.URL) bool {
	return u.Fragment != "" || u.RawFragment != "" ||
		strings.Contains(u.EscapedPath(), "@") || strings.Contains(u.RawQuery, "@")
}

// Redact returns rawURL with any password replaced, for logs and errors:
// the password of the user information, and the value of every query
// parameter whose name suggests a secret (password, sslpassword, pwd,
// token…). An opaque URL ("nats:user:pw@host") shows only its scheme, and
// so does one with a fragment or an '@' after its host (a password with an
// unescaped '#', '?' or '/'); one that does not parse or has no scheme
// ("host=… password=…") shows nothing.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "<unparseable URL>"
	}
	if u.Scheme == "" { // not a URL: "host=… password=…", say
		return "<URL without a scheme hidden>"
	}
	if u.Opaque != "" {
		return u.Scheme + ":<opaque URL hidden>"
	}
	if misplacedUserinfo(u) { // the host and port may be the user and the start of the password
		return u.Scheme + "://<URL hidden: " + misplacedProblem + ">"
	}
	if u.RawQuery != "" {
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			u.RawQuery = "<unparseable query hidden>"
		} else {
			hidden := false
			for k := range q {
				if SecretParam(k) {
					q[k], hidden = []string{"xxxxx"}, true
				}
			}
			if hidden {
				u.RawQuery = q.Encode()
			}
		}
	}
	if _, has := u.User.Password(); u.User != nil && !has && strings.HasPrefix(u.Scheme, "nats") {
		u.User = url.User("xxxxx") // nats://TOKEN@host: the user part is the token
	}
	out := u.Redacted()
	// url.URL drops the "//" of a URL without a host, user or path
	// ("gochannel://?x=1" would read "gochannel:?x=1"): put it back, so
	// the redacted URL is the one the user wrote.
	if rest, ok := strings.CutPrefix(out, u.Scheme+":"); ok && !strings.HasPrefix(rest, "//") && hasAuthority(rawURL) {
		out = u.Scheme + "://" + rest
	}
	return out
}

// hasAuthority reports whether rawURL's scheme is followed by "//".
func hasAuthority(rawURL string) bool {
	_, rest, ok := strings.Cut(rawURL, ":")
	return ok && strings.HasPrefix(rest, "//")
}
