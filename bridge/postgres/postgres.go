package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	wmsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/internal/consume"
)

const (
	// opTimeout bounds each statement the bridge runs on its own behalf.
	opTimeout = 15 * time.Second
	// heartbeatEvery refreshes bridge_groups.seen_at of the groups this
	// bridge has members in (and re-creates a group removed meanwhile).
	heartbeatEvery = time.Minute
	// replyStaleAfter: reply groups not seen for this long belong to an
	// instance that died without closing; any bridge deletes them.
	replyStaleAfter = 15 * time.Minute
	// listenerPing: an idle LISTEN connection is pinged this often, so a
	// silently dead connection is noticed and replaced.
	listenerPing = 30 * time.Second
)

func init() {
	bridge.Register("postgres", open)
	bridge.Register("postgresql", open)
}

func open(ctx context.Context, u *url.URL, log *slog.Logger) (bridge.Bridge, error) {
	c, err := parseURL(u)
	if err != nil {
		return nil, err
	}
	return newBridge(ctx, c, log)
}

// Bridge is a PostgreSQL connection implementing bridge.Bridge. Open it with
// bridge.Open and a postgres:// URL.
type Bridge struct {
	cfg     config
	q       queries
	pool    *pgxpool.Pool
	log     *slog.Logger
	channel string // NOTIFY channel: the schema's name

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	regMu   sync.Mutex // serialises group registration (Subscriber) and leave
	mu      sync.Mutex
	closed  bool
	groups  map[groupKey]*groupRef
	members map[*subscriber]struct{}        // open subscribers, closed by Close
	sources map[string]map[*source]struct{} // topic → running subscriptions, for wake-ups
	bgWG    sync.WaitGroup                  // listener and maintenance

	commit    committer
	pubMu     sync.RWMutex // held shared by Publish, exclusively by Close
	pubClosed bool

	closeOnce sync.Once
}

type groupKey struct{ topic, name string }

// groupRef is a consumer group this bridge has members in.
type groupRef struct {
	key     groupKey
	kind    bridge.Kind
	id      atomic.Int64 // bridge_groups.id; replaced if the row is re-created
	members int          // guarded by Bridge.mu
}

func newBridge(ctx context.Context, c config, log *slog.Logger) (*Bridge, error) {
	pool, err := pgxpool.NewWithConfig(ctx, c.pool)
	if err != nil {
		return nil, fmt.Errorf("%w: postgres at %s: %w", bridge.ErrBadURL, c.addr, err)
	}
	fail := func(err error) (*Bridge, error) {
		pool.Close()
		return nil, err
	}
	// Opening is bounded by ctx (each connection also by DialTimeout); a
	// caller without a deadline gets DialTimeout plus opTimeout for it all.
	connectCtx, cancel := ctx, context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		connectCtx, cancel = context.WithTimeout(ctx, DialTimeout+opTimeout)
	}
	defer cancel()
	if err := pool.Ping(connectCtx); err != nil {
		return fail(connectError(c.addr, err))
	}
	if err := ensureSchema(connectCtx, pool, c.schema); err != nil {
		return fail(err)
	}
	b := &Bridge{
		cfg:     c,
		q:       newQueries(quoteIdent(c.schema)),
		pool:    pool,
		log:     log.With("bridge", "postgres", "schema", c.schema),
		channel: c.schema,
		groups:  map[groupKey]*groupRef{},
		members: map[*subscriber]struct{}{},
		sources: map[string]map[*source]struct{}{},
	}
	b.commit.b = b
	// The first LISTEN connection is made here, so that a bridge that opens
	// is already woken by the next NOTIFY.
	conn, err := b.listenConnect(connectCtx)
	if err != nil {
		return fail(connectError(c.addr, err))
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.bgWG.Add(2)
	go b.listen(conn)
	go b.maintain()
	return b, nil
}

// connectError classifies a failed connection attempt: a parameter the
// server rejected is a bad URL, anything else (refused, timeout, unknown
// host, authentication, missing database) makes the backend unreachable.
func connectError(addr string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42704" || pgErr.Code == "22023") {
		return fmt.Errorf("%w: postgres at %s rejected a parameter: %w", bridge.ErrBadURL, addr, err)
	}
	return fmt.Errorf("%w: postgres at %s: %w", bridge.ErrUnreachable, addr, err)
}

// Name implements bridge.Bridge.
func (b *Bridge) Name() string { return "postgres" }

// Capabilities implements bridge.Bridge.
func (b *Bridge) Capabilities() bridge.Capabilities {
	return bridge.Capabilities{Durable: true, GroupOutlivesMembers: true, DetectsMissingHandler: true, CrossProcess: true, CountsDeliveries: true, NackDelay: true}
}

// Pool returns the bridge's connection pool, for callers that publish inside
// their own transactions (see SchemaAdapter). It is closed by Close.
func (b *Bridge) Pool() *pgxpool.Pool { return b.pool }

// Adapter returns the watermill-sql schema adapter for this bridge's schema.
func (b *Bridge) Adapter() SchemaAdapter { return SchemaAdapter{Schema: b.cfg.schema} }

// Health implements bridge.Bridge with a round trip to the server.
func (b *Bridge) Health(ctx context.Context) error {
	if b.isClosed() {
		return bridge.ErrClosed
	}
	var one int
	if err := b.pool.QueryRow(ctx, `SELECT 1`).Scan(&one); err != nil {
		return fmt.Errorf("postgres at %s: %w", b.cfg.addr, err)
	}
	return nil
}

func (b *Bridge) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// Close implements bridge.Bridge. Running subscriptions end (messages still
// held by handlers are abandoned and come back after the ack deadline),
// this bridge's reply groups are deleted, and the pool is closed. It is safe
// to call more than once.
func (b *Bridge) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closed = true
		var replies []int64
		for _, g := range b.groups {
			if g.kind == bridge.Reply {
				replies = append(replies, g.id.Load())
			}
		}
		members := slices.Collect(maps.Keys(b.members))
		b.mu.Unlock()

		// No subscriber waits for its handlers now: the rows they hold
		// are not released (the handlers may still be running) and come
		// back after the ack deadline; acks given before are still written.
		b.cancel()
		for _, s := range members {
			s.Abandon()
		}
		for _, s := range members {
			_ = s.Subscriber.Close()
		}

		// Taking pubMu exclusively waits for every running Publish (each
		// ended by b.ctx at the latest), and pubClosed stops new ones, so
		// no statement is sent on the pool after it is closed.
		b.pubMu.Lock()
		b.pubClosed = true
		b.pubMu.Unlock()

		for _, id := range replies {
			b.deleteReplyGroup(id)
		}
		b.bgWG.Wait()
		b.pool.Close()
	})
	return nil
}

// Publisher implements bridge.Bridge.
func (b *Bridge) Publisher() message.Publisher { return publisher{b} }

type publisher struct{ b *Bridge }

// Publish queues copies of msgs for every consumer group of topic, in one
// autocommitted statement (all or nothing: one INSERT for every message and
// group, and one NOTIFY, delivered on commit), which concurrent calls share
// (group commit, see committer). It fails with
// bridge.ErrNoSubscriber when the topic has no group, with bridge.ErrClosed
// after Close, and with bridge.ErrRefused (not bridge.ErrUnreachable) for a
// topic no group could have or a message that cannot be stored. The first
// message's context bounds the call, as in watermill-sql.
func (p publisher) Publish(topic string, msgs ...*message.Message) error {
	b := p.b
	b.pubMu.RLock()
	defer b.pubMu.RUnlock()
	if b.pubClosed {
		return bridge.ErrClosed
	}
	if len(msgs) == 0 {
		return nil
	}
	// Checked here, before the server: a refusal of the message itself,
	// which no retry cures.
	if err := validateTopic(topic); err != nil {
		return fmt.Errorf("%w: %w", bridge.ErrRefused, err)
	}
	uuids, payloads, metas, err := encodeMessages(msgs)
	if err != nil {
		return fmt.Errorf("%w: %w", bridge.ErrRefused, err)
	}
	ctx, cancel := context.WithTimeout(msgs[0].Context(), opTimeout)
	defer cancel()
	err = b.commit.publish(&pubReq{ctx: ctx, topic: topic, uuids: uuids, payloads: payloads, metas: metas, done: make(chan error, 1)})
	if err == nil {
		return nil
	}
	if errors.Is(err, errNoGroup) {
		return fmt.Errorf("%w %q", bridge.ErrNoSubscriber, topic)
	}
	var pgErr *pgconn.PgError
	if transient(err) {
		return fmt.Errorf("%w: postgres: publish to %q: %w", bridge.ErrUnreachable, topic, err)
	}
	if errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "22") {
		// A data exception (a NUL or a bad escape in the metadata, …): the
		// message as it is can never be stored.
		return fmt.Errorf("%w: postgres: publish to %q: %w", bridge.ErrRefused, topic, err)
	}
	return fmt.Errorf("postgres: publish to %q: %w", topic, err)
}

// transient reports whether a failed statement may succeed when tried
// again: no answer from the server (a broken or refused connection, a
// timeout), or an error class that says the server cannot serve now
// (connection exception 08, transaction rollback 40, insufficient resources
// 53, operator intervention 57 such as an admin shutdown). Callers tell
// "the backend is down, try later" (bridge.ErrUnreachable) from a refusal
// of the message itself, which no retry cures.
func transient(err error) bool {
	if errors.Is(err, wmsql.ErrInvalidTopicName) || errors.Is(err, bridge.ErrRefused) {
		return false // refused before reaching the server
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return true
	}
	if len(pgErr.Code) < 2 {
		return false
	}
	switch pgErr.Code[:2] {
	case "08", "40", "53", "57":
		return true
	}
	return false
}

// Close is a no-op: the bridge owns the publisher and closes it in Close.
func (publisher) Close() error { return nil }

// Subscriber implements bridge.Bridge. It registers spec.Group as a consumer
// group of spec.Topic (so that messages published from now on are queued for
// it even while no member runs) and returns a subscriber for it.
func (b *Bridge) Subscriber(ctx context.Context, spec bridge.Spec) (message.Subscriber, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if err := validateTopic(spec.Topic); err != nil {
		return nil, err
	}
	if b.isClosed() {
		return nil, bridge.ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	// regMu orders this registration with a concurrent leave of the same
	// reply group, which would otherwise delete the row just upserted.
	b.regMu.Lock()
	defer b.regMu.Unlock()
	id, err := b.registerGroup(ctx, groupKey{spec.Topic, spec.Group}, spec.Kind)
	if err != nil {
		return nil, err
	}
	key := groupKey{spec.Topic, spec.Group}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, bridge.ErrClosed
	}
	ref := b.groups[key]
	if ref == nil {
		ref = &groupRef{key: key, kind: spec.Kind}
		b.groups[key] = ref
	}
	sub, err := consume.New(consume.Config{
		Spec: spec, Backend: "postgres", Logger: b.log,
		// Every held message is given up when its lease ends (its
		// Delivery.Deadline), so this only backs that up.
		CloseWait: b.cfg.ackDeadline,
		Prefetch:  b.cfg.prefetch,
	}, func(context.Context) (consume.Source, error) { return b.newSource(ref, spec) })
	if err != nil {
		return nil, err
	}
	ref.id.Store(id)
	ref.members++
	s := &subscriber{Subscriber: sub, b: b, ref: ref}
	b.members[s] = struct{}{}
	return s, nil
}

// subscriber is one member of a consumer group: the shared consumer runtime
// (bridge/internal/consume), which leaves the group when it closes.
type subscriber struct {
	*consume.Subscriber
	b         *Bridge
	ref       *groupRef
	leaveOnce sync.Once
}

// Close stops claiming, waits for the verdict on every message handed out
// (at most the ack deadline: see consume.Subscriber.Close) and leaves the
// group; the last member of a reply group deletes it. The bridge and its
// publisher stay open.
func (s *subscriber) Close() error {
	err := s.Subscriber.Close()
	s.leaveOnce.Do(func() { s.b.leave(s) })
	return err
}

// registerGroup inserts (or refreshes) the group row and returns its id.
func (b *Bridge) registerGroup(ctx context.Context, key groupKey, kind bridge.Kind) (int64, error) {
	var (
		id   int64
		have string
	)
	err := b.pool.QueryRow(ctx, b.q.upsertGroup, key.topic, key.name, kind.String()).Scan(&id, &have)
	if err != nil {
		return 0, fmt.Errorf("postgres: registering group %q of topic %q: %w", key.name, key.topic, err)
	}
	if have != kind.String() {
		return 0, fmt.Errorf("postgres: group %q on topic %q is a %s group, cannot join as %s", key.name, key.topic, have, kind)
	}
	return id, nil
}

// leave drops member s of its group; the last member of a reply group
// deletes it.
func (b *Bridge) leave(s *subscriber) {
	ref := s.ref
	b.regMu.Lock()
	defer b.regMu.Unlock()
	b.mu.Lock()
	delete(b.members, s)
	ref.members--
	last := ref.members == 0
	if last && b.groups[ref.key] == ref {
		delete(b.groups, ref.key)
	}
	closed := b.closed
	b.mu.Unlock()
	if last && ref.kind == bridge.Reply && !closed {
		b.deleteReplyGroup(ref.id.Load())
	}
}

func (b *Bridge) deleteReplyGroup(id int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := b.pool.Exec(ctx, b.q.deleteGroup, id); err != nil {
		b.log.Warn("deleting reply group (it will be collected when stale)", "group_id", id, "err", err)
	}
}

// addSource registers a running subscription for wake-ups; false once
// closed.
func (b *Bridge) addSource(s *source) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	m := b.sources[s.topic]
	if m == nil {
		m = map[*source]struct{}{}
		b.sources[s.topic] = m
	}
	m[s] = struct{}{}
	return true
}

func (b *Bridge) removeSource(s *source) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.sources[s.topic], s)
	if len(b.sources[s.topic]) == 0 {
		delete(b.sources, s.topic)
	}
}

// wakeTopic wakes every running subscription of topic.
func (b *Bridge) wakeTopic(topic string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.sources[topic] {
		s.signal()
	}
}

// wakeAll wakes every running subscription (after LISTEN was re-established,
// notifications sent meanwhile are lost).
func (b *Bridge) wakeAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.sources {
		for s := range m {
			s.signal()
		}
	}
}

// maintain refreshes this bridge's groups and collects stale reply groups.
func (b *Bridge) maintain() {
	defer b.bgWG.Done()
	t := time.NewTicker(heartbeatEvery)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
		b.mu.Lock()
		refs := make([]*groupRef, 0, len(b.groups))
		for _, g := range b.groups {
			refs = append(refs, g)
		}
		b.mu.Unlock()
		sort.Slice(refs, func(i, j int) bool { return refs[i].id.Load() < refs[j].id.Load() })
		for _, g := range refs {
			ctx, cancel := context.WithTimeout(b.ctx, opTimeout)
			id, err := b.registerGroup(ctx, g.key, g.kind)
			cancel()
			if err != nil {
				b.log.Debug("group heartbeat failed", "topic", g.key.topic, "group", g.key.name, "err", err)
				continue
			}
			if old := g.id.Swap(id); old != id {
				b.log.Warn("consumer group was deleted and has been re-created; messages published meanwhile were not queued for it",
					"topic", g.key.topic, "group", g.key.name)
			}
		}
		ctx, cancel := context.WithTimeout(b.ctx, opTimeout)
		if _, err := b.pool.Exec(ctx, b.q.gcReplies, replyStaleAfter.Microseconds()); err != nil && b.ctx.Err() == nil {
			b.log.Debug("collecting stale reply groups failed", "err", err)
		}
		cancel()
	}
}

// listenConnect opens the dedicated LISTEN connection.
func (b *Bridge) listenConnect(ctx context.Context) (*pgx.Conn, error) {
	cfg := b.cfg.pool.ConnConfig.Copy()
	ctx, cancel := context.WithTimeout(ctx, DialTimeout+time.Second) // the connection, then LISTEN
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+quoteIdent(b.channel)); err != nil {
		_ = conn.Close(context.Background())
		return nil, err
	}
	return conn, nil
}

// listen keeps one connection LISTENing on the bridge's channel and wakes
// the subscriptions of each notified topic. The connection is re-made after
// any failure (with backoff); every subscription is woken once it is back,
// since notifications sent while it was down are lost.
func (b *Bridge) listen(conn *pgx.Conn) {
	defer b.bgWG.Done()
	backoff := 100 * time.Millisecond
	down := false
	for {
		if conn == nil {
			var err error
			conn, err = b.listenConnect(b.ctx)
			if err != nil {
				if b.ctx.Err() != nil {
					return
				}
				if !down {
					b.log.Warn("LISTEN connection down; subscribers fall back to polling", "err", err)
					down = true
				}
				select {
				case <-b.ctx.Done():
					return
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, 2*time.Second)
				continue
			}
			if down {
				b.log.Info("LISTEN connection restored")
				down = false
			}
			backoff = 100 * time.Millisecond
			b.wakeAll()
		}
		err := b.waitNotifications(conn)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = conn.Close(ctx)
		cancel()
		conn = nil
		if b.ctx.Err() != nil {
			return
		}
		b.log.Warn("LISTEN connection lost; reconnecting", "err", err)
		down = true
	}
}

func (b *Bridge) waitNotifications(conn *pgx.Conn) error {
	for {
		ctx, cancel := context.WithTimeout(b.ctx, listenerPing)
		n, err := conn.WaitForNotification(ctx)
		cancel()
		switch {
		case err == nil:
			b.wakeTopic(n.Payload)
		case b.ctx.Err() != nil:
			return err
		case errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed():
			// Idle: make sure the connection is still alive.
			ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
			err = conn.Ping(ctx)
			cancel()
			if err != nil {
				return err
			}
		default:
			return err
		}
	}
}

// DatabaseURL checks a PostgreSQL connection string before a driver sees
// it, and returns it as the driver should read it. The driver's own errors
// would show a password: as the port when the host is forgotten, as the
// rest of the URL after an unescaped '/' or '@' (pgx splits userinfo at
// the first '@', net/url at the last), or whole when a URL of another
// scheme is read as a keyword/value string. So a URL must parse
// (bridge.ParseURL), must be postgres:// or postgresql://, and is returned
// as net/url reads it; a keyword/value string ("host=… user=…") is
// returned as it is.
func DatabaseURL(raw string) (string, error) {
	if !strings.Contains(raw, "://") {
		return raw, nil
	}
	u, err := bridge.ParseURL(raw)
	if err != nil {
		return "", err
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return "", fmt.Errorf("%w: %s is not a PostgreSQL URL (want postgres:// or postgresql://)", bridge.ErrBadURL, bridge.Redact(raw))
	}
	return u.String(), nil
}
