package amqp

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-go/switchboard/bridge"
)

// Defaults of the URL parameters (see the package documentation).
const (
	// DefaultExchange is the exchange every topic is routed through.
	DefaultExchange = "switchboard"
	// DefaultPrefetch is how many unacked messages the broker sends a
	// subscription per unit of its Concurrency: its channel's prefetch
	// count is Concurrency × prefetch.
	DefaultPrefetch = 2
	// DefaultPublishChannels is the size of the publisher's channel pool.
	DefaultPublishChannels = 8
	// DefaultPublishWindow is how many messages may await their publisher
	// confirm on one channel of the pool at once.
	DefaultPublishWindow = 512
	// DefaultHeartbeat is the AMQP heartbeat interval asked of the broker.
	DefaultHeartbeat = 10 * time.Second
	// DefaultReconnectMax is the longest wait between two reconnect attempts.
	DefaultReconnectMax = 5 * time.Second
	// DefaultCloseTimeout bounds how long Subscriber.Close waits for the
	// messages its handlers still hold.
	DefaultCloseTimeout = 30 * time.Second
	// DefaultConnectionName is shown as the connection's name in the
	// RabbitMQ management UI (suffixed with "/publish" or "/consume").
	DefaultConnectionName = "switchboard"
)

// Timings that are not URL parameters.
const (
	// DialTimeout bounds one connection attempt: TCP dial, TLS and AMQP
	// handshakes. It applies to the first (which the context given to
	// bridge.Open bounds as well) and to every reconnection.
	DialTimeout = 5 * time.Second
	// opTimeout bounds the bridge's own round trips outside a caller's
	// context: closing a connection, moving a nacked delivery to its delay
	// queue.
	opTimeout = 5 * time.Second
)

// maxTTL is the largest x-message-ttl / x-expires RabbitMQ accepts (2^32-1 ms).
const maxTTL = time.Duration(1<<32-1) * time.Millisecond

// options is a parsed bridge URL.
type options struct {
	uri   string // what amqp091 gets: the URL without our query parameters
	addr  string // host:port, for messages
	vhost string
	user  string

	exchange        string
	prefetch        int
	publishChannels int
	publishWindow   int
	heartbeat       time.Duration
	reconnectMax    time.Duration
	queueExpires    time.Duration // 0: queues never expire
	closeTimeout    time.Duration
	name            string
	tls             *tls.Config // amqps only
}

// exchangeRE is what RabbitMQ accepts as an exchange name, kept to the
// portable character set of the AMQP 0-9-1 specification.
var exchangeRE = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,127}$`)

func durationParam(dst func(*options) *time.Duration, minimum, maximum time.Duration) func(*options, string) error {
	return func(o *options, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%q is not a duration such as 500ms or 2s", v)
		}
		if d < minimum || d > maximum {
			return fmt.Errorf("%s is out of range [%s, %s]", d, minimum, maximum)
		}
		*dst(o) = d
		return nil
	}
}

func intParam(dst func(*options) *int, minimum, maximum int) func(*options, string) error {
	return func(o *options, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%q is not an integer", v)
		}
		if n < minimum || n > maximum {
			return fmt.Errorf("%d is out of range [%d, %d]", n, minimum, maximum)
		}
		*dst(o) = n
		return nil
	}
}

// tlsFiles collects the tls_* parameters until the URL is fully read.
type tlsFiles struct{ ca, cert, key, serverName string }

// params maps each URL parameter to its parser; tls_* are collected by
// parseURL itself and have no parser.
var params = map[string]func(o *options, v string) error{
	"exchange": func(o *options, v string) error {
		if !exchangeRE.MatchString(v) || strings.HasPrefix(v, "amq.") {
			return fmt.Errorf("%q is not a usable exchange name (letters, digits, '-', '_', '.', ':'; not amq.*)", v)
		}
		o.exchange = v
		return nil
	},
	"prefetch":         intParam(func(o *options) *int { return &o.prefetch }, 1, 65535),
	"publish_channels": intParam(func(o *options) *int { return &o.publishChannels }, 1, 1024),
	"publish_window":   intParam(func(o *options) *int { return &o.publishWindow }, 1, 65535),
	"heartbeat":        durationParam(func(o *options) *time.Duration { return &o.heartbeat }, time.Second, 10*time.Minute),
	"reconnect_max":    durationParam(func(o *options) *time.Duration { return &o.reconnectMax }, 10*time.Millisecond, 10*time.Minute),
	"queue_expires":    durationParam(func(o *options) *time.Duration { return &o.queueExpires }, time.Second, maxTTL),
	"close_timeout":    durationParam(func(o *options) *time.Duration { return &o.closeTimeout }, 0, time.Hour),
	"name": func(o *options, v string) error {
		o.name = v
		return nil
	},
	// tls_* are handled in parseURL; listed here so they count as known.
	"tls_ca":          nil,
	"tls_cert":        nil,
	"tls_key":         nil,
	"tls_server_name": nil,
}

func knownParams() string {
	names := make([]string, 0, len(params))
	for k := range params {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// parseURL validates u and splits it into our options and the URI handed to
// the AMQP client. Every error wraps bridge.ErrBadURL.
func parseURL(u *url.URL) (options, error) {
	o := options{
		exchange:        DefaultExchange,
		prefetch:        DefaultPrefetch,
		publishChannels: DefaultPublishChannels,
		publishWindow:   DefaultPublishWindow,
		heartbeat:       DefaultHeartbeat,
		reconnectMax:    DefaultReconnectMax,
		closeTimeout:    DefaultCloseTimeout,
		name:            DefaultConnectionName,
	}
	bad := func(format string, args ...any) (options, error) {
		return options{}, fmt.Errorf("%w: amqp: "+format, append([]any{bridge.ErrBadURL}, args...)...)
	}
	if u.Scheme != "amqp" && u.Scheme != "amqps" {
		return bad("scheme %q (want amqp or amqps)", u.Scheme)
	}
	if u.Opaque != "" {
		return bad("%q is not of the form amqp://user:pass@host:port/vhost", bridge.Redact(u.String()))
	}
	if u.Fragment != "" {
		return bad("unexpected fragment #%s", u.Fragment)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return bad("query: %v", err)
	}
	var tf tlsFiles
	for k, vs := range q {
		p, ok := params[k]
		if !ok {
			return bad("unknown parameter %q (known: %s)", k, knownParams())
		}
		if len(vs) != 1 {
			return bad("parameter %q given %d times", k, len(vs))
		}
		v := vs[0]
		if v == "" {
			return bad("parameter %q is empty", k)
		}
		switch k {
		case "tls_ca":
			tf.ca = v
		case "tls_cert":
			tf.cert = v
		case "tls_key":
			tf.key = v
		case "tls_server_name":
			tf.serverName = v
		default:
			if err := p(&o, v); err != nil {
				return bad("%s: %v", k, err)
			}
		}
	}

	// What the client sees: no query, no fragment.
	clean := *u
	clean.RawQuery = ""
	clean.ForceQuery = false
	clean.Fragment = ""
	clean.RawFragment = ""
	o.uri = clean.String()
	parsed, err := amqp091.ParseURI(o.uri)
	if err != nil {
		return bad("%q: %v", bridge.Redact(o.uri), err)
	}
	o.addr = net.JoinHostPort(parsed.Host, strconv.Itoa(parsed.Port))
	o.vhost = parsed.Vhost
	o.user = parsed.Username

	if tf != (tlsFiles{}) {
		if u.Scheme != "amqps" {
			return bad("tls_* parameters need the amqps scheme")
		}
	}
	if u.Scheme == "amqps" {
		cfg, err := tf.config(parsed.Host)
		if err != nil {
			return bad("%v", err)
		}
		o.tls = cfg
	}
	return o, nil
}

func (tf tlsFiles) config(host string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if tf.serverName != "" {
		cfg.ServerName = tf.serverName
	}
	if tf.ca != "" {
		pem, err := os.ReadFile(tf.ca)
		if err != nil {
			return nil, fmt.Errorf("tls_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls_ca: no PEM certificate in %s", tf.ca)
		}
		cfg.RootCAs = pool
	}
	if (tf.cert == "") != (tf.key == "") {
		return nil, fmt.Errorf("tls_cert and tls_key go together")
	}
	if tf.cert != "" {
		pair, err := tls.LoadX509KeyPair(tf.cert, tf.key)
		if err != nil {
			return nil, fmt.Errorf("tls_cert/tls_key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}
