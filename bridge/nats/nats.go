package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/internal/consume"
)

// Timings that are not URL parameters.
const (
	// DialTimeout bounds one connection attempt, handshake included: the
	// first (which the context given to bridge.Open bounds as well) and
	// every reconnection.
	DialTimeout = 5 * time.Second
	// ReplyMaxAge is how long an unconsumed reply is kept. Reply streams are
	// not durable; the limit only matters when an instance vanished without
	// closing its reply subscription.
	ReplyMaxAge = time.Hour
)

// Internal timings.
const (
	reconnectWait  = 500 * time.Millisecond // between reconnect attempts, plus jitter
	pingInterval   = 10 * time.Second       // detects a silently dead server in ~30 s
	publishTimeout = 5 * time.Second        // wait for JetStream's publish ack
	fetchWait      = 500 * time.Millisecond // lifetime of one pull request; bounds a subscriber's Close
	requestTimeout = 5 * time.Second        // one request to the server: consumer info, health, stream deletion
	adminTimeout   = 10 * time.Second       // stream/consumer calls without a caller deadline
	// publishWindow bounds the publishes one Publish call has awaiting
	// their PubAck; maxAsyncPending bounds them over the connection.
	publishWindow   = 256
	maxAsyncPending = 4096
)

func init() {
	bridge.Register("nats", open)
}

// open is the bridge.Opener registered for "nats".
func open(ctx context.Context, u *url.URL, log *slog.Logger) (bridge.Bridge, error) {
	opts, oerr := parseOptions(u)
	server, shown, serr := serverURL(u)
	if err := errors.Join(serr, oerr); err != nil {
		return nil, err
	}
	log = log.With("bridge", "nats", "server", shown)
	b := &natsBridge{
		opts:      opts,
		shown:     shown,
		log:       log,
		streams:   map[string]string{},
		subs:      map[*subscriber]struct{}{},
		replyRefs: map[string]int{},
		done:      make(chan struct{}),
	}

	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: nats at %s: %w", bridge.ErrUnreachable, shown, err)
	}
	natsOpts := []natsgo.Option{
		natsgo.Name("switchboard"),
		natsgo.Timeout(DialTimeout), // each attempt; ctx bounds this first connect below
		natsgo.MaxReconnects(-1),
		natsgo.ReconnectWait(reconnectWait),
		// No buffering while disconnected: a publish fails at once instead
		// of waiting for an ack, and no stale pull request reaches the
		// server after a reconnect.
		natsgo.ReconnectBufSize(-1),
		natsgo.PingInterval(pingInterval),
		natsgo.DisconnectErrHandler(func(c *natsgo.Conn, err error) {
			if c.IsClosed() {
				return // our own Close
			}
			log.Warn("nats: disconnected; reconnecting", "err", err)
		}),
		natsgo.ReconnectHandler(func(c *natsgo.Conn) {
			log.Info("nats: reconnected", "url", bridge.Redact(c.ConnectedUrl()))
			b.reconnected()
		}),
		natsgo.ErrorHandler(func(_ *natsgo.Conn, sub *natsgo.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Error("nats: asynchronous error", "subject", subj, "err", err)
		}),
	}

	type result struct {
		conn *natsgo.Conn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		c, err := natsgo.Connect(server, natsOpts...)
		done <- result{c, err}
	}()
	var conn *natsgo.Conn
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("%w: nats at %s: %w", bridge.ErrUnreachable, shown, r.err)
		}
		conn = r.conn
	case <-ctx.Done():
		go func() { // the dial is bounded by DialTimeout; close whatever it yields
			if r := <-done; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, fmt.Errorf("%w: nats at %s: %w", bridge.ErrUnreachable, shown, ctx.Err())
	}

	js, err := jetstream.New(conn,
		jetstream.WithPublishAsyncMaxPending(maxAsyncPending),
		jetstream.WithPublishAsyncTimeout(publishTimeout))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("nats at %s: jetstream: %w", shown, err)
	}
	actx, cancel := context.WithTimeout(ctx, DialTimeout)
	_, err = js.AccountInfo(actx)
	cancel()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: nats at %s: JetStream unavailable (is the server started with -js?): %w", bridge.ErrUnreachable, shown, err)
	}

	b.mu.Lock() // the reconnect handler reads these
	b.conn, b.js = conn, js
	b.mu.Unlock()
	return b, nil
}

// reconnected makes every subscriber check its consumer: a server restart
// loses memory streams (reply topics), and an operator may have deleted
// things meanwhile.
func (b *natsBridge) reconnected() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	for s := range b.subs {
		s.checks.Add(1) // under b.mu, while s is in b.subs: before stop's Wait
		go func() {
			defer s.checks.Done()
			s.reconnected()
		}()
	}
}

// natsBridge is one connection to a NATS server with JetStream.
type natsBridge struct {
	opts  options
	shown string // redacted server URL
	conn  *natsgo.Conn
	js    jetstream.JetStream
	log   *slog.Logger

	mu        sync.Mutex
	streams   map[string]string // topic → stream, for the publisher
	subs      map[*subscriber]struct{}
	replyRefs map[string]int // reply stream → open reply subscribers
	closed    bool
	done      chan struct{}
	closeOnce sync.Once
}

// Name implements bridge.Bridge.
func (b *natsBridge) Name() string { return "nats" }

// headerFraming is room kept in the server's max_payload for what is not
// payload nor metadata bytes: the "NATS/1.0" line, Watermill's message id
// header, and ": " plus CRLF for up to 64 metadata entries.
const headerFraming = 1024

// Capabilities implements bridge.Bridge. MaxMessageBytes is the server's
// max_payload, which counts headers, less headerFraming.
func (b *natsBridge) Capabilities() bridge.Capabilities {
	return bridge.Capabilities{Durable: true, GroupOutlivesMembers: true, DetectsMissingHandler: false, CrossProcess: true, CountsDeliveries: true, NackDelay: true,
		MaxMessageBytes: max(int(b.conn.MaxPayload())-headerFraming, 1)}
}

// Health implements bridge.Bridge: the connection must be up and JetStream
// must answer an account-info request.
func (b *natsBridge) Health(ctx context.Context) error {
	if b.isClosed() {
		return bridge.ErrClosed
	}
	if s := b.conn.Status(); s != natsgo.CONNECTED {
		return fmt.Errorf("%w: nats at %s: connection %s", bridge.ErrUnreachable, b.shown, s)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, requestTimeout)
		defer cancel()
	}
	if _, err := b.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("%w: nats at %s: JetStream: %w", bridge.ErrUnreachable, b.shown, err)
	}
	return nil
}

func (b *natsBridge) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// Close implements bridge.Bridge. Open subscribers stop at once: a message
// a handler still holds is not acked and JetStream delivers it again after
// ack_wait. Reply streams of this bridge are deleted, then the connection
// is flushed and closed.
func (b *natsBridge) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closed = true
		close(b.done)
		subs := make([]*subscriber, 0, len(b.subs))
		for s := range b.subs {
			subs = append(subs, s)
		}
		b.mu.Unlock()
		var stops sync.WaitGroup // together: each waits for its pull request
		for _, s := range subs {
			stops.Go(func() { s.stop(true) })
		}
		stops.Wait()
		if err := b.conn.FlushTimeout(time.Second); err != nil && !errors.Is(err, natsgo.ErrConnectionClosed) {
			b.log.Debug("nats: flush before close", "err", err)
		}
		// nats.go runs the disconnect handler of its own Close on its
		// callback goroutine, after Close returns: that would be this
		// package's code still running once the bridge is closed, and it
		// has nothing to report about our own close.
		b.conn.SetDisconnectErrHandler(nil)
		b.conn.Close()
	})
	return nil
}

// Publisher implements bridge.Bridge.
func (b *natsBridge) Publisher() message.Publisher { return publisher{b} }

type publisher struct{ b *natsBridge }

// Close is a no-op: the bridge owns the connection.
func (publisher) Close() error { return nil }

// Publish stores each message in the stream of topic and returns nil only
// once JetStream has acknowledged every one of them. The stream is created
// when it does not exist yet, except for reply topics (see the package
// documentation). Several messages are pipelined: up to publishWindow are
// sent before the first PubAck is awaited, in order on one connection; the
// first failure is returned once every message sent has been answered (or
// timed out), so an error may follow messages that were stored.
func (p publisher) Publish(topic string, msgs ...*message.Message) error {
	b := p.b
	if b.isClosed() {
		return bridge.ErrClosed
	}
	if err := validSubject(topic); err != nil {
		return fmt.Errorf("%w: nats: publish: %w", bridge.ErrRefused, err)
	}
	if len(msgs) == 0 {
		return nil
	}
	nms := make([]*natsgo.Msg, len(msgs))
	for i, m := range msgs {
		if err := encodable(m.Metadata); err != nil {
			return fmt.Errorf("%w: nats: publish to %q: %w", bridge.ErrRefused, topic, err)
		}
		nm, err := marshaler.Marshal(topic, m)
		if err != nil {
			return fmt.Errorf("%w: nats: publish to %q: %w", bridge.ErrRefused, topic, err)
		}
		nms[i] = nm
	}
	if _, err := b.publisherStream(topic); err != nil {
		return err
	}
	var failed []*natsgo.Msg
	var err error
	if len(nms) == 1 {
		if err = b.publishSync(nms[0]); noStream(err) {
			failed = nms
		}
	} else {
		failed, err = b.publishAsync(nms)
	}
	if len(failed) > 0 {
		// The stream went away since it was cached (deleted by an operator,
		// or a reply stream whose owner closed): look again, once, and
		// publish again what it did not store.
		b.forgetStream(topic)
		if _, err := b.publisherStream(topic); err != nil {
			return err
		}
		err = nil
		for _, nm := range failed {
			if err = b.publishSync(nm); err != nil {
				break
			}
		}
	}
	if err != nil {
		return b.publishErr(topic, err)
	}
	return nil
}

// noStream reports whether err says that no stream stores the subject.
func noStream(err error) bool {
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, natsgo.ErrNoStreamResponse)
}

func (b *natsBridge) publishErr(topic string, err error) error {
	if errors.Is(err, natsgo.ErrMaxPayload) {
		return fmt.Errorf("%w: nats: publish to %q: the server's max_payload is %d bytes, headers included", bridge.ErrTooLarge, topic, b.conn.MaxPayload())
	}
	if !b.conn.IsConnected() {
		return fmt.Errorf("%w: nats at %s: publish to %q: %w", bridge.ErrUnreachable, b.shown, topic, err)
	}
	return fmt.Errorf("nats: publish to %q: %w", topic, err)
}

// publishSync publishes nm and waits for its PubAck.
func (b *natsBridge) publishSync(nm *natsgo.Msg) error {
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	_, err := b.js.PublishMsg(ctx, nm)
	return err
}

// publishAsync publishes nms with at most publishWindow of them awaiting
// their PubAck, and waits for every PubAck. It returns the messages no
// stream took (the caller looks the stream up again) and the first other
// error; a message that was not sent because of an earlier error counts as
// failed with it.
func (b *natsBridge) publishAsync(nms []*natsgo.Msg) (noStreamMsgs []*natsgo.Msg, firstErr error) {
	type sent struct {
		nm *natsgo.Msg
		f  jetstream.PubAckFuture
	}
	var window []sent // awaiting their PubAck, oldest first
	// A safety net only (WithPublishAsyncTimeout answers first): one timer
	// for the call, restarted at each answer, not one per message.
	const stallLimit = publishTimeout + time.Second
	stall := time.NewTimer(stallLimit)
	defer stall.Stop()
	wait := func(s sent) {
		var err error
		select {
		case <-s.f.Ok():
		case err = <-s.f.Err():
		case <-stall.C:
			err = jetstream.ErrAsyncPublishTimeout
		}
		stall.Reset(stallLimit)
		switch {
		case err == nil:
		case noStream(err):
			noStreamMsgs = append(noStreamMsgs, s.nm)
		case firstErr == nil:
			firstErr = err
		}
	}
	for _, nm := range nms {
		if firstErr != nil {
			break
		}
		if len(window) == publishWindow {
			wait(window[0])
			window = window[1:]
		}
		f, err := b.js.PublishMsgAsync(nm)
		if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			// Other callers hold the connection's whole window: wait for
			// ours, then send this one on its own.
			for _, s := range window {
				wait(s)
			}
			window = window[:0]
			if err = b.publishSync(nm); noStream(err) {
				noStreamMsgs = append(noStreamMsgs, nm)
				err = nil
			}
			if err != nil && firstErr == nil {
				firstErr = err
			}
			continue
		}
		if err != nil {
			firstErr = err
			break
		}
		window = append(window, sent{nm, f})
	}
	for _, s := range window {
		wait(s)
	}
	return noStreamMsgs, firstErr
}

// encodable checks that md can travel as NATS headers: keys are header
// field names (RFC 9110 tokens) and values hold no CR, LF or NUL. The
// server refuses anything else ("could not decode headers"), which no
// retry cures: checked first, it is a permanent refusal, never an outage.
func encodable(md message.Metadata) error {
	for k, v := range md {
		if k == "" {
			return errors.New("empty metadata key")
		}
		for i := 0; i < len(k); i++ {
			if !tokenChar(k[i]) {
				return fmt.Errorf("metadata key %q is not a header field name", k)
			}
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return fmt.Errorf("metadata value of %q holds a line break or NUL", k)
		}
	}
	return nil
}

func tokenChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// Subscriber implements bridge.Bridge. The stream and the group's durable
// consumer are created here, so a Command or Event group exists (and keeps
// its messages) from this call on.
func (b *natsBridge) Subscriber(ctx context.Context, spec bridge.Spec) (message.Subscriber, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if err := validSubject(spec.Topic); err != nil {
		return nil, fmt.Errorf("nats: subscriber: %w", err)
	}
	if b.isClosed() {
		return nil, bridge.ErrClosed
	}
	cons, stream, err := b.provision(ctx, spec)
	if err != nil {
		return nil, err
	}
	s := &subscriber{b: b, spec: spec, stream: stream, cons: cons, verified: time.Now(), closing: make(chan struct{})}
	s.Subscriber, err = consume.New(consume.Config{
		Spec:           spec,
		Backend:        "nats",
		Logger:         b.log,
		CloseWait:      b.opts.ackWait,
		HeartbeatEvery: b.opts.ackWait / 2,
		Prefetch:       b.opts.prefetch,
	}, func(context.Context) (consume.Source, error) { return source{s}, nil })
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, bridge.ErrClosed
	}
	b.subs[s] = struct{}{}
	if spec.Kind == bridge.Reply {
		b.replyRefs[stream]++
	}
	return s, nil
}

// compile-time checks
var (
	_ bridge.Bridge     = (*natsBridge)(nil)
	_ message.Publisher = publisher{}
)
