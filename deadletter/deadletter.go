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
)

// TargetGroupKey is the metadata key that restricts a message to one
// consumer group: every other group acknowledges it without handling it.
// Replays and delayed retries set it, so that only the handler that failed
// sees the message again, on every backend.
const TargetGroupKey = "target_group"

// Error kinds.
const (
	KindPermanent = "permanent" // not retryable: bad input, a 4xx error, Permanent(err)
	KindExhausted = "exhausted" // retryable, but the attempts or time ran out
)

// Record is one dead-lettered message.
type Record struct {
	ID            string            `json:"id"`
	MessageID     string            `json:"message_id"`
	Topic         string            `json:"topic"`
	Service       string            `json:"service"`
	Handler       string            `json:"handler"`
	Group         string            `json:"group"`
	Payload       []byte            `json:"payload"`
	Metadata      map[string]string `json:"metadata"`
	Error         string            `json:"error"`
	ErrorKind     string            `json:"error_kind"`
	Attempts      int               `json:"attempts"`
	FirstFailedAt time.Time         `json:"first_failed_at"`
	LastFailedAt  time.Time         `json:"last_failed_at"`
}

// Filter selects records. Zero fields match everything.
type Filter struct {
	Service, Handler, Topic string
	ErrorContains           string    // substring of Error, case-insensitive
	Since, Until            time.Time // on LastFailedAt: Since ≤ t < Until
	Limit                   int       // page size; 0 means 100
	After                   string    // cursor: the Next of the previous page
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

// Store keeps dead-lettered messages.
type Store interface {
	// Put adds r, or updates the record with the same MessageID and Group
	// (keeping its ID and FirstFailedAt). It returns the record's ID.
	Put(ctx context.Context, r Record) (string, error)
	// List returns one page of matching records, oldest failure first, and
	// the cursor of the next page ("" on the last page).
	List(ctx context.Context, f Filter) (records []Record, next string, err error)
	// Get returns one record or ErrNotFound.
	Get(ctx context.Context, id string) (Record, error)
	// Delete removes one record or returns ErrNotFound.
	Delete(ctx context.Context, id string) error
	// PurgeBefore removes records whose last failure is before t.
	PurgeBefore(ctx context.Context, t time.Time) (int, error)
}

// Replay publishes the record's message again, with its original payload,
// id and metadata, restricted to the record's group, then deletes the
// record. If the publish fails the record stays.
func Replay(ctx context.Context, s Store, pub message.Publisher, id string) error {
	r, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	msg := message.NewMessage(r.MessageID, r.Payload)
	msg.SetContext(ctx)
	maps.Copy(msg.Metadata, r.Metadata)
	msg.Metadata.Set(TargetGroupKey, r.Group)
	delete(msg.Metadata, "deadline") // nobody waits for a replayed message
	if err := pub.Publish(r.Topic, msg); err != nil {
		return fmt.Errorf("deadletter: replay %s to %s: %w", id, r.Topic, err)
	}
	if err := s.Delete(ctx, id); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("deadletter: replayed %s but could not delete it: %w", id, err)
	}
	return nil
}

// ReplayAll replays every record matching f (paging through them) and
// returns how many were replayed.
func ReplayAll(ctx context.Context, s Store, pub message.Publisher, f Filter) (int, error) {
	n := 0
	for {
		f.After = "" // replayed records are deleted: always read the first page
		page, _, err := s.List(ctx, f)
		if err != nil {
			return n, err
		}
		if len(page) == 0 {
			return n, nil
		}
		for _, r := range page {
			if err := Replay(ctx, s, pub, r.ID); err != nil {
				return n, err
			}
			n++
		}
	}
}

// Memory is an in-process Store.
type Memory struct {
	mu      sync.Mutex
	records map[string]Record
}

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory { return &Memory{records: map[string]Record{}} }

// Put implements Store.
func (m *Memory) Put(_ context.Context, r Record) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, old := range m.records {
		if old.MessageID == r.MessageID && old.Group == r.Group {
			r.ID, r.FirstFailedAt = id, old.FirstFailedAt
			m.records[id] = clone(r)
			return id, nil
		}
	}
	if r.ID == "" {
		r.ID = watermill.NewUUID()
	}
	m.records[r.ID] = clone(r)
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
func (m *Memory) Delete(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.records[id]; !ok {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	delete(m.records, id)
	return nil
}

// PurgeBefore implements Store.
func (m *Memory) PurgeBefore(_ context.Context, t time.Time) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for id, r := range m.records {
		if r.LastFailedAt.Before(t) {
			delete(m.records, id)
			n++
		}
	}
	return n, nil
}

func clone(r Record) Record {
	r.Payload = append([]byte(nil), r.Payload...)
	r.Metadata = maps.Clone(r.Metadata)
	return r
}
