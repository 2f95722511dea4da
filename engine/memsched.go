package engine

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/internal/cronspec"
	"github.com/switchboard-go/switchboard/internal/envelope"
)

// maxMemScheduled bounds the in-memory scheduler: pending one-off messages
// (a recurring schedule counts as none).
const maxMemScheduled = 1_000_000

// memBatch is the most due messages one round of Run publishes before it
// looks at the clock and its context again.
const memBatch = 256

// The in-memory scheduler's wait before publishing again a message whose
// publish failed: memRetryFirst doubling up to memRetryMax, forever (it is
// not dropped; Cancel still removes it).
const (
	memRetryFirst = 100 * time.Millisecond
	memRetryMax   = 30 * time.Second
)

// memScheduler is the default Scheduler of an engine on the in-process
// bus: a min-heap of entries by due time, with their heap index so that
// Cancel and Reschedule are O(log n), and one timer, set to the earliest
// due time, in Run. A recurring schedule is an entry too, due at its next
// tick, which it turns into a one-off entry for that tick's message. Ticks
// missed while the loop was late are skipped (catch-up needs a store that
// outlives the process).
type memScheduler struct {
	log   *slog.Logger
	limit int
	wake  chan struct{} // capacity 1: the earliest due time changed

	mu      sync.Mutex
	stopped bool // Run returned: nothing more is published
	heap    memHeap
	byID    map[string]*memEntry // one-off entries
	recurs  map[string]*memEntry // recurring entries, by name
}

// memEntry is one scheduled message (msg set) or one recurring schedule
// (rec set).
type memEntry struct {
	at       time.Time
	index    int // in the heap
	id       string
	topic    string
	msg      *message.Message
	attempts int // failed publishes
	rec      *Recurrence
	next     cronspec.Schedule
}

func newMemScheduler(limit int, log *slog.Logger) *memScheduler {
	return &memScheduler{
		log:    log,
		limit:  limit,
		wake:   make(chan struct{}, 1),
		byID:   map[string]*memEntry{},
		recurs: map[string]*memEntry{},
	}
}

// Durable is false: what is scheduled is lost with the process.
func (s *memScheduler) Durable() bool { return false }

// Schedule implements Scheduler.
func (s *memScheduler) Schedule(_ context.Context, topic string, msg *message.Message, at time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errMemStopped()
	}
	if _, ok := s.byID[msg.UUID]; ok {
		return fmt.Errorf("message %s is scheduled already", msg.UUID)
	}
	if len(s.byID) >= s.limit {
		return with(ErrUnavailable, fmt.Sprintf("the in-memory scheduler holds %d messages, its limit", s.limit), map[string]any{"limit": s.limit})
	}
	s.push(&memEntry{at: at, id: msg.UUID, topic: topic, msg: msg})
	return nil
}

// Cancel implements Scheduler.
func (s *memScheduler) Cancel(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	en, ok := s.byID[id]
	if !ok {
		return ErrScheduleNotFound
	}
	delete(s.byID, id)
	first := en.index == 0
	heap.Remove(&s.heap, en.index)
	if first {
		s.signal()
	}
	return nil
}

// Reschedule implements Scheduler; the message's "scheduled_for" becomes
// at.
func (s *memScheduler) Reschedule(_ context.Context, id string, at time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errMemStopped()
	}
	en, ok := s.byID[id]
	if !ok {
		return ErrScheduleNotFound
	}
	en.msg.Metadata.Set(envelope.KeyScheduledFor, envelope.FormatTime(at))
	en.at, en.attempts = at, 0
	s.fix(en)
	return nil
}

// Recur implements Scheduler: the first tick is the next one after now; a
// schedule declared again under its name replaces the former.
func (s *memScheduler) Recur(_ context.Context, r Recurrence) error {
	next, err := cronspec.Parse(r.Spec)
	if err != nil {
		return err
	}
	at := next.Next(time.Now())
	if at.IsZero() {
		return fmt.Errorf("cron spec %q never fires", r.Spec)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if en, ok := s.recurs[r.Name]; ok {
		en.rec, en.next, en.at, en.topic = &r, next, at, r.Topic
		s.fix(en)
		return nil
	}
	en := &memEntry{at: at, topic: r.Topic, rec: &r, next: next}
	s.recurs[r.Name] = en
	s.push(en)
	return nil
}

// Run implements Scheduler: it publishes what is due on b, waiting on one
// timer for the earliest due time.
func (s *memScheduler) Run(ctx context.Context, b bridge.Bridge) error {
	defer s.stop()
	pub := b.Publisher()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		due, next := s.takeDue(time.Now())
		for _, en := range due {
			s.publish(pub, en)
		}
		if len(due) == memBatch {
			if ctx.Err() != nil {
				return nil
			}
			continue // more may be due
		}
		if next.IsZero() {
			timer.Stop()
		} else {
			timer.Reset(time.Until(next))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		case <-timer.C:
		}
	}
}

// errMemStopped refuses a message the in-memory scheduler would never
// publish: its Run has returned (the engine is stopping).
func errMemStopped() error {
	return with(ErrUnavailable, "the in-memory scheduler has stopped (the engine is stopping): the message would never be published", nil)
}

// stop marks the end of Run: Schedule and Reschedule fail from then on,
// and the messages still pending, lost with the scheduler, are logged.
func (s *memScheduler) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	if n := len(s.byID); n > 0 {
		s.log.Warn("in-memory scheduler stopped: its scheduled messages are lost", "pending", n)
	}
}

// publish publishes a due one-off entry. An event nobody subscribes to is
// done with; a message the bridge refuses for what it is (too large,
// refused: every attempt would fail alike) is dropped and logged, as the
// outbox relay parks such a row; any other failure puts the entry back,
// due after a backoff.
func (s *memScheduler) publish(pub message.Publisher, en *memEntry) {
	err := pub.Publish(en.topic, en.msg)
	if err == nil || errors.Is(err, bridge.ErrNoSubscriber) && en.msg.Metadata.Get(envelope.KeyKind) == envelope.KindEvent {
		return
	}
	if errors.Is(err, bridge.ErrTooLarge) || errors.Is(err, bridge.ErrRefused) {
		s.log.Error("scheduled message cannot be published; dropped", "message_id", en.id, "topic", en.topic, "err", err)
		return
	}
	en.attempts++
	wait := memRetryMax
	if en.attempts < 20 { // 100 ms × 2^19 is past memRetryMax already
		wait = min(memRetryFirst<<(en.attempts-1), memRetryMax)
	}
	s.log.Warn("scheduled message not published; trying again", "message_id", en.id, "topic", en.topic, "attempt", en.attempts, "retry_in", wait, "err", err)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.byID[en.id]; ok { // scheduled again meanwhile under its id
		return
	}
	en.at = time.Now().Add(wait)
	s.push(en)
}

// takeDue removes up to memBatch entries due at now and returns them, each
// due recurring schedule having added its tick's message, and the earliest
// due time left (zero: none).
func (s *memScheduler) takeDue(now time.Time) ([]*memEntry, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var due []*memEntry
	for len(due) < memBatch && len(s.heap) > 0 && !s.heap[0].at.After(now) {
		en := s.heap[0]
		if en.rec != nil {
			s.tick(en, now)
			continue
		}
		heap.Pop(&s.heap)
		delete(s.byID, en.id)
		due = append(due, en)
	}
	if len(s.heap) == 0 {
		return due, time.Time{}
	}
	return due, s.heap[0].at
}

// tick adds the message of the recurring schedule en's due tick (a fresh
// id, its own conversation, "scheduled_for" the tick) and moves en to the
// next tick after now. Past the limit the tick is skipped, and logged.
func (s *memScheduler) tick(en *memEntry, now time.Time) {
	tick := en.at
	en.at = en.next.Next(now)
	if en.at.IsZero() { // no tick left
		heap.Remove(&s.heap, en.index)
		delete(s.recurs, en.rec.Name)
	} else {
		heap.Fix(&s.heap, en.index)
	}
	if len(s.byID) >= s.limit {
		s.log.Warn("recurring schedule's tick skipped: the in-memory scheduler is full", "schedule", en.rec.Name, "tick", tick, "limit", s.limit)
		return
	}
	msg := message.NewMessage(envelope.NewID(), en.rec.Msg.Payload)
	for k, v := range en.rec.Msg.Metadata {
		msg.Metadata.Set(k, v)
	}
	msg.Metadata.Set(envelope.KeyScheduledFor, envelope.FormatTime(tick))
	s.push(&memEntry{at: tick, id: msg.UUID, topic: en.topic, msg: msg})
}

// push adds en (s.mu held), waking Run when it is the earliest.
func (s *memScheduler) push(en *memEntry) {
	if en.rec == nil {
		s.byID[en.id] = en
	}
	heap.Push(&s.heap, en)
	if en.index == 0 {
		s.signal()
	}
}

// fix restores the heap after en's due time changed (s.mu held), waking
// Run when the earliest may have changed.
func (s *memScheduler) fix(en *memEntry) {
	was := en.index == 0
	heap.Fix(&s.heap, en.index)
	if was || en.index == 0 {
		s.signal()
	}
}

func (s *memScheduler) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// memHeap orders entries by due time (container/heap).
type memHeap []*memEntry

func (h memHeap) Len() int           { return len(h) }
func (h memHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h memHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}

func (h *memHeap) Push(x any) {
	en := x.(*memEntry)
	en.index = len(*h)
	*h = append(*h, en)
}

func (h *memHeap) Pop() any {
	old := *h
	n := len(old)
	en := old[n-1]
	old[n-1] = nil
	en.index = -1
	*h = old[:n-1]
	return en
}
