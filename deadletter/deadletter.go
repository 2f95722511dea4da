package deadletter

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
)

// TargetGroupKey is the metadata key that restricts a message to one
// consumer group: every other group acknowledges it without handling it.
// Replays and delayed retries set it, so that only the handler that failed
// sees the message again, on every backend.
const TargetGroupKey = "target_group"

// Error kinds.
const (
	KindPermanent = "permanent" // not retryable: bad input, a 4xx error, middleware.Permanent(err)
	KindExhausted = "exhausted" // retryable, but the attempts or time ran out
)

// Record is one dead-lettered message. A record is identified by ID, and
// is the one record of its key (MessageID, Group, Topic): one message's
// failed handling by one consumer group.
type Record struct {
	// ID identifies the record in its store; Put assigns it to a new
	// record when empty.
	ID string `json:"id"`
	// MessageID is the failed message's id (its Watermill UUID).
	MessageID string `json:"message_id"`
	// Topic is the topic the message was consumed from, and the one a
	// replay publishes it to.
	Topic string `json:"topic"`
	// Service is the failing service's versioned name (email.v1); empty
	// for a handler outside a Switchboard service.
	Service string `json:"service"`
	// Handler is the name of the handler that failed.
	Handler string `json:"handler"`
	// Group is the consumer group of the failing handler: a replay reaches
	// this group only (TargetGroupKey).
	Group string `json:"group"`
	// Payload is the message's payload, as received.
	Payload []byte `json:"payload"`
	// Metadata is the message's metadata, without the per-delivery
	// bookkeeping keys (delivery count, nack delay, attempt, target group).
	Metadata map[string]string `json:"metadata"`
	// Error is the text of the final error.
	Error string `json:"error"`
	// ErrorKind says why the message was given up: KindPermanent or
	// KindExhausted.
	ErrorKind string `json:"error_kind"`
	// Attempts counts the handler runs of the message across all its
	// deliveries, up to the last failure: deliveries × the in-process
	// attempts (Reliability.Retry) each delivery made. With the defaults, 5
	// deliveries of 3 attempts each record 15; a permanent failure on the
	// first try records 1.
	Attempts int `json:"attempts"`
	// FirstFailedAt is when the message first failed (kept when a later
	// failure updates the record).
	FirstFailedAt time.Time `json:"first_failed_at"`
	// LastFailedAt is when its last failure was recorded; filters and
	// paging use it.
	LastFailedAt time.Time `json:"last_failed_at"`
	// Version counts the writes of the record: the store sets it to 1 when
	// Put adds the record and adds 1 on every Put that updates it (the
	// value given to Put is ignored). Delete takes the version its caller
	// read, so that it never removes a failure written after that read.
	Version int64 `json:"version"`
}

// Filter selects records. Zero fields match everything.
type Filter struct {
	Service       string    // Record.Service equals it
	Handler       string    // Record.Handler equals it
	Topic         string    // Record.Topic equals it
	ErrorContains string    // substring of Error, case-insensitive
	Since, Until  time.Time // on LastFailedAt: Since ≤ t < Until
	Limit         int       // page size; 0 means 100
	After         string    // cursor: the Next of the previous page
}

// Match reports whether r passes f (ignoring paging).
func (f Filter) Match(r Record) bool {
	return (f.Service == "" || r.Service == f.Service) &&
		(f.Handler == "" || r.Handler == f.Handler) &&
		(f.Topic == "" || r.Topic == f.Topic) &&
		(f.ErrorContains == "" || strings.Contains(strings.ToLower(r.Error), strings.ToLower(f.ErrorContains))) &&
		(f.Since.IsZero() || !r.LastFailedAt.Before(f.Since)) &&
		(f.Until.IsZero() || r.LastFailedAt.Before(f.Until))
}

// PageSize returns Limit or its default.
func (f Filter) PageSize() int {
	if f.Limit <= 0 {
		return 100
	}
	return f.Limit
}

// ErrNotFound is returned for an unknown record id.
var ErrNotFound = errors.New("deadletter: record not found")

// ErrChanged is returned by Delete when the record was written again (its
// Version moved on) after the version given was read. The record stays.
var ErrChanged = errors.New("deadletter: record changed since it was read")

// Store keeps dead-lettered messages. Every implementation must pass the
// conformance suite in package deadletter/storetest.
type Store interface {
	// Put adds r, or updates the record with the same key (MessageID,
	// Group, Topic), keeping its ID and FirstFailedAt. Either way it sets
	// the record's Version (1 when added, one more when updated), in the
	// same atomic step as the write. It returns the record's ID.
	Put(ctx context.Context, r Record) (string, error)
	// List returns one page of matching records, oldest failure first, and
	// the cursor of the next page ("" on the last page).
	List(ctx context.Context, f Filter) (records []Record, next string, err error)
	// Get returns one record or ErrNotFound.
	Get(ctx context.Context, id string) (Record, error)
	// Delete removes the record id if its Version is still version, as one
	// atomic compare-and-delete: it returns ErrChanged, and removes
	// nothing, when a Put updated the record since version was read, and
	// ErrNotFound when there is no such record.
	Delete(ctx context.Context, id string, version int64) error
	// Purge removes every record matching f (its Limit and After are
	// ignored) and returns how many it removed.
	Purge(ctx context.Context, f Filter) (int, error)
}

// Replay publishes the record's message again, with its original payload,
// id and metadata, restricted to the record's group, then deletes the
// record unless it was written again in between: a replayed message that
// fails again before the delete keeps its new failure (see the package
// documentation). If the publish fails the record stays.
func Replay(ctx context.Context, s Store, pub message.Publisher, id string) error {
	_, err := replay(ctx, s, pub, id)
	return err
}

// step is a step of a replay.
type step int

const (
	stepGet step = iota
	stepPublish
	stepDelete
)

// replay is Replay; at is the step that failed when err is not nil.
func replay(ctx context.Context, s Store, pub message.Publisher, id string) (at step, err error) {
	r, err := s.Get(ctx, id)
	if err != nil {
		return stepGet, err
	}
	msg := message.NewMessage(r.MessageID, r.Payload)
	msg.SetContext(ctx)
	maps.Copy(msg.Metadata, r.Metadata)
	msg.Metadata.Set(TargetGroupKey, r.Group)
	delete(msg.Metadata, "deadline") // nobody waits for a replayed message
	if err := pub.Publish(r.Topic, msg); err != nil {
		return stepPublish, fmt.Errorf("deadletter: replay %s to %s: %w", id, r.Topic, err)
	}
	// Only the version published: a newer failure of the replayed message,
	// or another writer's, stays. Already gone is fine too.
	err = s.Delete(ctx, id, r.Version)
	if err != nil && !errors.Is(err, ErrChanged) && !errors.Is(err, ErrNotFound) {
		return stepDelete, fmt.Errorf("deadletter: replayed %s but could not delete it: %w", id, err)
	}
	return stepDelete, nil
}

// ReplayCounts is what ReplayAll did with the records it set out to replay.
type ReplayCounts struct {
	Replayed int // published again
	Failed   int // not published (the publish failed); their records stay
	Gone     int // removed by someone else (deleted, purged, replayed) before their turn
}

// ReplayAll replays, once each, the records that matched f when it started.
// It first lists them all — only records that last failed before it
// started, by this machine's clock, which bounds the listing while new
// failures arrive — and only then replays them one by one, in the store's
// order; a replayed message that fails again is stored after the listing
// and is not replayed again. A record whose publish fails is counted in
// Failed and stays, and the others are still replayed; the error returned
// then says how many failed and wraps the first failure. ReplayAll stops
// early, returning what it did so far, on a store error, when ctx ends, or
// when the broker is unreachable or closed (bridge.ErrUnreachable,
// bridge.ErrClosed), since every later publish would fail alike.
// It holds the listed record ids in memory (some tens of bytes each).
func ReplayAll(ctx context.Context, s Store, pub message.Publisher, f Filter) (ReplayCounts, error) {
	var c ReplayCounts
	if start := time.Now(); f.Until.IsZero() || f.Until.After(start) {
		f.Until = start // bounds the listing too: later failures come after it
	}
	f.After = ""
	var ids []string
	for {
		page, next, err := s.List(ctx, f)
		if err != nil {
			return c, err
		}
		for _, r := range page {
			ids = append(ids, r.ID)
		}
		if next == "" {
			break
		}
		f.After = next // keyset paging: strictly forward, ends at f.Until
	}
	var firstFailure error
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return c, err
		}
		at, err := replay(ctx, s, pub, id)
		switch {
		case err == nil:
			c.Replayed++
		case at == stepDelete: // published, then the store failed
			c.Replayed++
			return c, err
		case at == stepGet && errors.Is(err, ErrNotFound):
			c.Gone++
		case at == stepPublish && (errors.Is(err, bridge.ErrUnreachable) || errors.Is(err, bridge.ErrClosed)):
			// The broker is down: every later publish would wait out its
			// timeout and fail the same way. Stop; the records stay.
			c.Failed++
			return c, err
		case at == stepPublish && ctx.Err() == nil:
			c.Failed++
			if firstFailure == nil {
				firstFailure = err
			}
		default: // the store failed, or ctx ended
			return c, err
		}
	}
	if firstFailure != nil {
		return c, fmt.Errorf("deadletter: %d of %d replays failed, their records stay; the first: %w", c.Failed, len(ids), firstFailure)
	}
	return c, nil
}

// Memory is an in-process Store.
type Memory struct {
	mu      sync.Mutex
	records map[string]Record // by ID
	byKey   map[key]string    // the ID of each key's record
}

// key is what Put upserts on.
type key struct{ messageID, group, topic string }

func keyOf(r Record) key { return key{r.MessageID, r.Group, r.Topic} }

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory { return &Memory{records: map[string]Record{}, byKey: map[key]string{}} }

// Put implements Store. A Record.ID given for a new record must not be the
// ID of another key's record.
func (m *Memory) Put(_ context.Context, r Record) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := keyOf(r)
	if id, ok := m.byKey[k]; ok {
		old := m.records[id]
		r.ID, r.FirstFailedAt, r.Version = id, old.FirstFailedAt, old.Version+1
		m.records[id] = clone(r)
		return id, nil
	}
	if r.ID == "" {
		r.ID = watermill.NewUUID()
	} else if _, taken := m.records[r.ID]; taken {
		return "", fmt.Errorf("deadletter: record id %s is taken by another message", r.ID)
	}
	r.Version = 1
	m.records[r.ID] = clone(r)
	m.byKey[k] = r.ID
	return r.ID, nil
}

// List implements Store.
func (m *Memory) List(_ context.Context, f Filter) ([]Record, string, error) {
	m.mu.Lock()
	var all []Record
	for _, r := range m.records {
		if f.Match(r) {
			all = append(all, clone(r))
		}
	}
	m.mu.Unlock()
	sort.Slice(all, func(i, j int) bool {
		if !all[i].LastFailedAt.Equal(all[j].LastFailedAt) {
			return all[i].LastFailedAt.Before(all[j].LastFailedAt)
		}
		return all[i].ID < all[j].ID
	})
	if f.After != "" {
		at, id, err := ParseCursor(f.After)
		if err != nil {
			return nil, "", err
		}
		i := sort.Search(len(all), func(i int) bool {
			r := all[i]
			return r.LastFailedAt.After(at) || r.LastFailedAt.Equal(at) && r.ID > id
		})
		all = all[i:]
	}
	if len(all) > f.PageSize() {
		return all[:f.PageSize()], cursor(all[f.PageSize()-1]), nil
	}
	return all, "", nil
}

// ParseCursor splits a List cursor into the last failure time and id of the
// record it points after.
func ParseCursor(c string) (time.Time, string, error) {
	ts, id, ok := strings.Cut(c, "|")
	t, err := time.Parse(time.RFC3339Nano, ts)
	if !ok || err != nil || id == "" {
		return time.Time{}, "", fmt.Errorf("deadletter: malformed cursor %q", c)
	}
	return t, id, nil
}

// cursor is the paging cursor pointing after r.
func cursor(r Record) string { return r.LastFailedAt.UTC().Format(time.RFC3339Nano) + "|" + r.ID }

// Get implements Store.
func (m *Memory) Get(_ context.Context, id string) (Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.records[id]
	if !ok {
		return Record{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return clone(r), nil
}

// Delete implements Store.
func (m *Memory) Delete(_ context.Context, id string, version int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.records[id]
	switch {
	case !ok:
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	case r.Version != version:
		return fmt.Errorf("%w: %s is at version %d, not %d", ErrChanged, id, r.Version, version)
	}
	m.remove(r)
	return nil
}

// Purge implements Store.
func (m *Memory) Purge(_ context.Context, f Filter) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, r := range m.records {
		if f.Match(r) {
			m.remove(r)
			n++
		}
	}
	return n, nil
}

// remove deletes r; m.mu is held.
func (m *Memory) remove(r Record) {
	delete(m.records, r.ID)
	delete(m.byKey, keyOf(r))
}

func clone(r Record) Record {
	r.Payload = append([]byte(nil), r.Payload...)
	r.Metadata = maps.Clone(r.Metadata)
	return r
}
