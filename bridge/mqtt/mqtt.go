package mqtt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/internal/consume"
)

// Timings that are not parameters.
const (
	// DialTimeout bounds one connection attempt, CONNACK included.
	DialTimeout = 5 * time.Second
	// PublishTimeout bounds the wait for one message's PUBACK.
	PublishTimeout = 5 * time.Second
	checkTimeout   = 2 * time.Second // Health without a deadline
	publishWindow  = 256             // PUBACKs one Publish call awaits at once
	// resubscribeGrace: for this long after the publisher reconnects, a
	// "no matching subscribers" answer is retried (see "Broker restarts").
	resubscribeGrace = 5 * time.Second
	resubscribeRetry = 100 * time.Millisecond
)

// Reason codes of a PUBACK this backend acts on.
const (
	rcNoMatchingSubscribers = 0x10
	rcTopicNameInvalid      = 0x90
	rcPacketTooLarge        = 0x95
)

// Reserved user properties: the message id and the deliveries a copy's
// message had before it was published again (see "Redelivery").
const (
	uuidProp      = "_watermill_message_uuid"
	deliveredProp = "_sb_delivered"
)

func init() {
	bridge.Register("mqtt", open)
	bridge.Register("mqtts", open)
}

// mqttBridge is one publisher connection and the subscribers' own ones.
type mqttBridge struct {
	opts   options
	server *url.URL // what autopaho dials: no credentials, no query
	shown  string   // redacted URL for messages
	user   string
	pass   []byte
	log    *slog.Logger
	pub    *autopaho.ConnectionManager

	mu          sync.Mutex
	subs        map[*consume.Subscriber]struct{}
	sources     map[*source]struct{}
	reconnected time.Time // when the publisher's connection last came back
	closed      bool
	closeOnce   sync.Once
}

// open is the bridge.Opener registered for "mqtt" and "mqtts".
func open(ctx context.Context, u *url.URL, log *slog.Logger) (bridge.Bridge, error) {
	opts, err := parseOptions(u)
	if u.Opaque != "" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		err = errors.Join(err, fmt.Errorf("%w: mqtt: want mqtt://[user:pass@]host[:port][?params]", bridge.ErrBadURL))
	}
	if err != nil {
		return nil, err
	}
	server := &url.URL{Scheme: "mqtt", Host: u.Host}
	if u.Scheme == "mqtts" {
		server.Scheme = "tls" // autopaho's name for MQTT over TLS
	}
	if server.Port() == "" {
		server.Host += map[string]string{"mqtt": ":1883", "tls": ":8883"}[server.Scheme]
	}
	b := &mqttBridge{opts: opts, server: server, shown: bridge.Redact(u.String()), subs: map[*consume.Subscriber]struct{}{}, sources: map[*source]struct{}{}}
	if u.User != nil {
		b.user = u.User.Username()
		p, _ := u.User.Password()
		b.pass = []byte(p)
	}
	b.log = log.With("bridge", "mqtt", "server", b.shown)
	// The publisher's session is not kept: a publish awaits its PUBACK, and
	// one the connection loses fails (the caller publishes again).
	first := true
	b.pub, err = b.connect(ctx, autopaho.ClientConfig{
		CleanStartOnInitialConnection: true,
		OnConnectionUp: func(*autopaho.ConnectionManager, *paho.Connack) {
			b.mu.Lock()
			if !first {
				b.reconnected = time.Now()
			}
			first = false
			b.mu.Unlock()
		},
		ClientConfig: paho.ClientConfig{ClientID: "sb-pub-" + watermill.NewShortUUID()},
	})
	if err != nil {
		return nil, err
	}
	return b, nil
}

// connect completes cfg with what every connection of the bridge shares
// (server, credentials, keep-alive, timeouts, reconnect backoff), starts
// it and waits, within ctx, for its first connection. A broker that
// answers with a refusal (bad credentials, a client id it rejects) fails
// it at once: autopaho would try again until ctx ends.
func (b *mqttBridge) connect(ctx context.Context, cfg autopaho.ClientConfig) (*autopaho.ConnectionManager, error) {
	var mu sync.Mutex
	var lastErr error
	first, refused := context.WithCancel(ctx)
	defer refused()
	cfg.ServerUrls = []*url.URL{b.server}
	cfg.KeepAlive = uint16(b.opts.keepAlive / time.Second)
	cfg.ConnectTimeout = DialTimeout
	cfg.ReconnectBackoff = func(n int) time.Duration { return min(100*time.Millisecond<<min(n, 5), 2*time.Second) }
	cfg.ConnectUsername, cfg.ConnectPassword = b.user, b.pass
	cfg.OnConnectError = func(err error) {
		mu.Lock()
		lastErr = err
		mu.Unlock()
		if ce := (*autopaho.ConnackError)(nil); errors.As(err, &ce) {
			refused()
		}
		b.log.Debug("mqtt: connecting failed", "client", cfg.ClientID, "err", err)
	}
	cm, err := autopaho.NewConnection(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	if err := cm.AwaitConnection(first); err != nil {
		dctx, cancel := context.WithTimeout(context.Background(), DialTimeout)
		defer cancel()
		_ = cm.Disconnect(dctx)
		mu.Lock()
		defer mu.Unlock()
		if ce := (*autopaho.ConnackError)(nil); errors.As(lastErr, &ce) {
			return nil, fmt.Errorf("mqtt at %s: the broker refused the connection: %w", b.shown, lastErr)
		}
		if lastErr != nil {
			err = lastErr
		}
		return nil, fmt.Errorf("%w: mqtt at %s: %w", bridge.ErrUnreachable, b.shown, err)
	}
	return cm, nil
}

// Name implements bridge.Bridge.
func (b *mqttBridge) Name() string { return "mqtt" }

// Capabilities implements bridge.Bridge (see "Capabilities" in the
// package documentation).
func (b *mqttBridge) Capabilities() bridge.Capabilities {
	return bridge.Capabilities{Durable: b.opts.stableID, GroupOutlivesMembers: b.opts.stableID, DetectsMissingHandler: true, CrossProcess: true, CountsDeliveries: true, NackDelay: true}
}

// Health implements bridge.Bridge: every subscription must be connected
// and subscribed, and the broker must answer a QoS 1 publish to a topic of
// the reserved root (nobody subscribes; the PUBACK is enough).
func (b *mqttBridge) Health(ctx context.Context) error {
	b.mu.Lock()
	closed, down := b.closed, 0
	for s := range b.sources {
		if !s.isReady() {
			down++
		}
	}
	b.mu.Unlock()
	if closed {
		return bridge.ErrClosed
	}
	if down > 0 {
		return fmt.Errorf("%w: mqtt at %s: %d subscriptions not connected and subscribed", bridge.ErrUnreachable, b.shown, down)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, checkTimeout)
		defer cancel()
	}
	if _, err := b.pub.Publish(ctx, &paho.Publish{Topic: reservedRoot + "/health", QoS: 1}); err != nil {
		return fmt.Errorf("%w: mqtt at %s: %w", bridge.ErrUnreachable, b.shown, err)
	}
	return nil
}

func (b *mqttBridge) inGrace() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.reconnected.IsZero() && time.Since(b.reconnected) < resubscribeGrace
}

func (b *mqttBridge) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// Close implements bridge.Bridge: subscribers stop at once (messages
// handlers still hold stay unacknowledged in their sessions), then the
// publisher disconnects.
func (b *mqttBridge) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closed = true
		subs := make([]*consume.Subscriber, 0, len(b.subs))
		for s := range b.subs {
			subs = append(subs, s)
		}
		b.mu.Unlock()
		for _, s := range subs { // not under b.mu: Abandon ends opens in progress
			s.Abandon()
		}
		for _, s := range subs {
			_ = s.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), DialTimeout)
		defer cancel()
		_ = b.pub.Disconnect(ctx)
	})
	return nil
}

// Publisher implements bridge.Bridge.
func (b *mqttBridge) Publisher() message.Publisher { return publisher{b} }

type publisher struct{ b *mqttBridge }

// Close is a no-op: the bridge owns the connection.
func (publisher) Close() error { return nil }

// Publish sends every message with QoS 1 and returns nil only once the
// broker has acknowledged each (PUBACK). Several are pipelined, at most
// publishWindow awaiting their PUBACK (and the broker's receive maximum);
// the first failure is returned once every one sent has been answered.
func (p publisher) Publish(topic string, msgs ...*message.Message) error {
	b := p.b
	if b.isClosed() {
		return bridge.ErrClosed
	}
	mt, err := mqttTopic(topic)
	if err != nil {
		return fmt.Errorf("%w: mqtt: publish: %w", bridge.ErrRefused, err)
	}
	pubs := make([]*paho.Publish, len(msgs))
	for i, m := range msgs {
		if pubs[i], err = encode(mt, m, 0); err != nil {
			return fmt.Errorf("%w: mqtt: publish to %q: %w", bridge.ErrRefused, topic, err)
		}
	}
	if len(pubs) == 1 {
		return b.publish(topic, pubs[0])
	}
	errs := make([]error, len(pubs))
	window := make(chan struct{}, publishWindow)
	var wg sync.WaitGroup
	for i, pb := range pubs {
		window <- struct{}{}
		wg.Go(func() {
			defer func() { <-window }()
			errs[i] = b.publish(topic, pb)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// publish sends one message and waits for its PUBACK.
//
// Mosquitto (2.0) keeps a persistent session's plain subscriptions across
// its own restart but not its shared ones: they are back only once their
// members have reconnected and subscribed again (each source does on every
// connection). A publisher that reconnects first would have its messages
// refused with "no matching subscribers" meanwhile, which drops an event
// and fails a command; so for resubscribeGrace after the publisher's
// reconnection, that answer is retried.
func (b *mqttBridge) publish(topic string, pb *paho.Publish) error {
	ctx, cancel := context.WithTimeout(context.Background(), PublishTimeout)
	defer cancel()
	r, err := b.pub.Publish(ctx, pb)
	for r != nil && r.ReasonCode == rcNoMatchingSubscribers && b.inGrace() && ctx.Err() == nil {
		time.Sleep(resubscribeRetry)
		r, err = b.pub.Publish(ctx, pb)
	}
	switch {
	case r != nil && r.ReasonCode == rcNoMatchingSubscribers:
		return fmt.Errorf("%w %q", bridge.ErrNoSubscriber, topic)
	case r != nil && r.ReasonCode == rcPacketTooLarge:
		return fmt.Errorf("%w: mqtt: publish to %q: the broker refused the packet size", bridge.ErrTooLarge, topic)
	case r != nil && r.ReasonCode == rcTopicNameInvalid:
		return fmt.Errorf("%w: mqtt: publish to %q: the broker refused the topic name", bridge.ErrRefused, topic)
	case err == nil:
		return nil
	case r != nil: // another refusal by the broker (not authorized, quota exceeded…)
		return fmt.Errorf("mqtt: publish to %q: %w", topic, err)
	}
	return fmt.Errorf("%w: mqtt at %s: publish to %q: %w", bridge.ErrUnreachable, b.shown, topic, err)
}

// encode builds the QoS 1 PUBLISH of m: metadata as user properties, the
// UUID in uuidProp, and, for a copy sent again, the deliveries so far.
func encode(topic string, m *message.Message, delivered int) (*paho.Publish, error) {
	props := make(paho.UserProperties, 0, len(m.Metadata)+2)
	props = append(props, paho.UserProperty{Key: uuidProp, Value: m.UUID})
	if !utf8.ValidString(m.UUID) {
		return nil, errors.New("message UUID is not UTF-8")
	}
	for k, v := range m.Metadata {
		if k == uuidProp || k == deliveredProp || k == bridge.DeliveryKey {
			continue // ours, or the delivery count of the message this one was received as
		}
		if k == "" || !utf8.ValidString(k) || !utf8.ValidString(v) || containsNUL(k) || containsNUL(v) {
			return nil, fmt.Errorf("metadata %q: MQTT user properties are UTF-8 strings without NUL", k)
		}
		props = append(props, paho.UserProperty{Key: k, Value: v})
	}
	if delivered > 0 {
		props = append(props, paho.UserProperty{Key: deliveredProp, Value: strconv.Itoa(delivered)})
	}
	return &paho.Publish{Topic: topic, QoS: 1, Payload: m.Payload, Properties: &paho.PublishProperties{User: props}}, nil
}

func containsNUL(s string) bool { return strings.IndexByte(s, 0) >= 0 }

// decode turns a received PUBLISH into a message and its delivery count:
// the deliveries its copies had, plus this one, plus one when the broker
// flags it as sent before (DUP, after a reconnect). The copies' count is
// read only from a copy (fromRetry: the group's redelivery topic, where
// this backend publishes them): on a topic any producer publishes to, a
// forged count would send a message to the poison path on its first
// delivery; there the property is dropped.
func decode(pb *paho.Publish, fromRetry bool) (*message.Message, int) {
	md := message.Metadata{}
	id, delivered := "", 0
	if pb.Properties != nil {
		for _, p := range pb.Properties.User {
			switch p.Key {
			case uuidProp:
				id = p.Value
			case deliveredProp:
				if n, err := strconv.Atoi(p.Value); fromRetry && err == nil && n > 0 && n < 1<<30 {
					delivered = n
				}
			default:
				md[p.Key] = p.Value
			}
		}
	}
	if id == "" { // from a producer that is not a Switchboard one
		id = watermill.NewUUID()
	}
	m := message.NewMessage(id, pb.Payload)
	m.Metadata = md
	n := delivered + 1
	if pb.Duplicate() {
		n++
	}
	return m, n
}

// compile-time checks
var (
	_ bridge.Bridge     = (*mqttBridge)(nil)
	_ message.Publisher = publisher{}
)
