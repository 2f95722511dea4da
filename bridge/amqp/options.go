package amqp

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/internal/params"
)

// Defaults of the URL parameters (see the package documentation).
const (
	// DefaultExchange is the exchange every topic is routed through.
	DefaultExchange = "switchboard"
	// DefaultPrefetch is how many messages a subscription holds beyond its
	// Concurrency (?prefetch=): fetched ahead and handed to the handlers in
	// order as they finish, so the next message is ready without a round
	// trip. The same parameter, with the same meaning and default, on the
	// NATS, RabbitMQ and PostgreSQL backends.
	DefaultPrefetch = 16
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

// tlsFiles are the tls_* parameters.
type tlsFiles struct{ ca, cert, key, serverName string }

func nonEmpty(v string) string {
	if v == "" {
		return "is empty"
	}
	return ""
}

// parseURL validates u and splits it into our options and the URI handed to
// the AMQP client. Every problem is reported; each wraps bridge.ErrBadURL.
func parseURL(u *url.URL) (options, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: amqp: "+format, append([]any{bridge.ErrBadURL}, args...)...)
	}
	if u.Scheme != "amqp" && u.Scheme != "amqps" {
		return options{}, bad("scheme %q (want amqp or amqps)", u.Scheme)
	}
	if u.Opaque != "" {
		return options{}, bad("%q is not of the form amqp://user:pass@host:port/vhost", bridge.Redact(u.String()))
	}
	if u.Fragment != "" {
		return options{}, bad("unexpected fragment #%s", u.Fragment)
	}
	r := params.New(u.Scheme, u)
	o := options{
		exchange: r.String("exchange", DefaultExchange, func(v string) string {
			if !exchangeRE.MatchString(v) || strings.HasPrefix(v, "amq.") {
				return "is not a usable exchange name (letters, digits, '-', '_', '.', ':'; not amq.*)"
			}
			return ""
		}),
		prefetch:        r.Int("prefetch", DefaultPrefetch, 0, 10000),
		publishChannels: r.Int("publish_channels", DefaultPublishChannels, 1, 1024),
		publishWindow:   r.Int("publish_window", DefaultPublishWindow, 1, 65535),
		heartbeat:       r.Duration("heartbeat", DefaultHeartbeat, time.Second, 10*time.Minute),
		reconnectMax:    r.Duration("reconnect_max", DefaultReconnectMax, 10*time.Millisecond, 10*time.Minute),
		queueExpires:    r.Duration("queue_expires", 0, time.Second, maxTTL),
		closeTimeout:    r.Duration("close_timeout", DefaultCloseTimeout, 0, time.Hour),
		name:            r.String("name", DefaultConnectionName, nonEmpty),
	}
	tf := tlsFiles{
		ca:         r.String("tls_ca", "", nonEmpty),
		cert:       r.String("tls_cert", "", nonEmpty),
		key:        r.String("tls_key", "", nonEmpty),
		serverName: r.String("tls_server_name", "", nonEmpty),
	}
	errs := []error{r.Err()}

	// What the client sees: no query, no fragment.
	clean := *u
	clean.RawQuery = ""
	clean.ForceQuery = false
	clean.Fragment = ""
	clean.RawFragment = ""
	o.uri = clean.String()
	parsed, err := amqp091.ParseURI(o.uri)
	if err != nil {
		errs = append(errs, bad("%q: %v", bridge.Redact(o.uri), err))
		return options{}, errors.Join(errs...)
	}
	o.addr = net.JoinHostPort(parsed.Host, strconv.Itoa(parsed.Port))
	o.vhost = parsed.Vhost
	o.user = parsed.Username

	switch {
	case u.Scheme == "amqps":
		if o.tls, err = tf.config(parsed.Host); err != nil {
			errs = append(errs, bad("%v", err))
		}
	case tf != (tlsFiles{}):
		errs = append(errs, bad("tls_* parameters need the amqps scheme"))
	}
	if err := errors.Join(errs...); err != nil {
		return options{}, err
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
