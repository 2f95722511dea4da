package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/deadletter"
)

// recorder is a publisher that keeps what it is given, in order.
type recorder struct {
	mu   sync.Mutex
	msgs []published
}

// published is one message given to a recorder, with its topic.
type published struct {
	topic string
	msg   *message.Message
}

func (p published) String() string { return fmt.Sprintf("%s %s", p.topic, p.msg.UUID) }

func (r *recorder) Publish(topic string, msgs ...*message.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range msgs {
		r.msgs = append(r.msgs, published{topic, m})
	}
	return nil
}

func (r *recorder) Close() error { return nil }

func (r *recorder) published() []published {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]published(nil), r.msgs...)
}

// refailingPublisher publishes, then writes a new failure of the message
// to the store before returning: the replayed message failed again before
// Replay's delete ran, the window the delete must not close over.
type refailingPublisher struct {
	message.Publisher
	s   deadletter.Store
	rec deadletter.Record
}

func (p refailingPublisher) Publish(topic string, msgs ...*message.Message) error {
	if err := p.Publisher.Publish(topic, msgs...); err != nil {
		return err
	}
	again := p.rec
	again.Error, again.LastFailedAt = "failed again after the replay", time.Now().UTC().Truncate(time.Millisecond)
	_, err := p.s.Put(context.Background(), again)
	return err
}

// replayKeepsAFailureWrittenBeforeTheDelete checks the interleaving that
// lost re-failures: publish, new failure stored, then Replay's delete.
func replayKeepsAFailureWrittenBeforeTheDelete(t *testing.T, s deadletter.Store, rec deadletter.Record) {
	ctx := context.Background()
	id, err := s.Put(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := deadletter.Replay(ctx, s, refailingPublisher{Publisher: discard{}, s: s, rec: rec}, id); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	recs, _, err := s.List(ctx, deadletter.Filter{Service: rec.Service, Topic: rec.Topic})
	if err != nil {
		t.Fatal(err)
	}
	var kept []deadletter.Record
	for _, r := range recs {
		if r.MessageID == rec.MessageID {
			kept = append(kept, r)
		}
	}
	if len(kept) != 1 || kept[0].Error != "failed again after the replay" {
		t.Fatalf("after a failure stored between publish and delete: %d records %+v; want the new failure kept", len(kept), kept)
	}
	_ = DeleteAll(ctx, s, kept)
}

// discard is a publisher that accepts everything.
type discard struct{}

func (discard) Publish(string, ...*message.Message) error { return nil }
func (discard) Close() error                              { return nil }

// ListAll lists every record of s matching f, page after page, failing
// the test on an error or when paging does not end. The engine's replay
// tests use it with the same stores.
func ListAll(t testing.TB, s deadletter.Store, f deadletter.Filter) []deadletter.Record {
	t.Helper()
	var out []deadletter.Record
	f.Limit = 500
	for range 1000 {
		page, next, err := s.List(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, page...)
		if next == "" {
			return out
		}
		f.After = next
	}
	t.Fatal("List does not stop paging")
	return nil
}

// DeleteAll deletes recs from s (each at its version), ignoring those
// already gone, and returns the other errors joined.
func DeleteAll(ctx context.Context, s deadletter.Store, recs []deadletter.Record) error {
	var errs []error
	for _, r := range recs {
		if err := s.Delete(ctx, r.ID, r.Version); err != nil && !errors.Is(err, deadletter.ErrNotFound) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

var errNoRoute = errors.New("no route to this topic")

// scriptedPublisher fails the publishes to failTopic and, when it publishes
// message trigger, deletes the record victim (someone else's delete).
type scriptedPublisher struct {
	discard
	s         deadletter.Store
	failTopic string
	trigger   string
	victim    deadletter.Record
}

func (p scriptedPublisher) Publish(topic string, msgs ...*message.Message) error {
	if topic == p.failTopic {
		return errNoRoute
	}
	for _, m := range msgs {
		if m.UUID == p.trigger {
			return p.s.Delete(context.Background(), p.victim.ID, p.victim.Version)
		}
	}
	return nil
}

// replayAllCounts checks ReplayAll's counts: one replayed, one whose
// publish fails (kept, and the others still replayed), one gone before its
// turn.
func replayAllCounts(t *testing.T, s deadletter.Store, recs [3]deadletter.Record) {
	ctx := context.Background()
	recs[1].Topic += ".unrouted"
	for i := range recs {
		id, err := s.Put(ctx, recs[i])
		if err != nil {
			t.Fatal(err)
		}
		recs[i].ID, recs[i].Version = id, 1
	}
	pub := scriptedPublisher{s: s, failTopic: recs[1].Topic, trigger: recs[0].MessageID, victim: recs[2]}
	got, err := deadletter.ReplayAll(ctx, s, pub, deadletter.Filter{Service: recs[0].Service})
	if want := (deadletter.ReplayCounts{Replayed: 1, Failed: 1, Gone: 1}); got != want || !errors.Is(err, errNoRoute) {
		t.Errorf("ReplayAll = %+v, %v; want %+v and the publish error", got, err, want)
	}
	left := ListAll(t, s, deadletter.Filter{Service: recs[0].Service})
	if len(left) != 1 || left[0].ID != recs[1].ID {
		t.Errorf("left %+v, want the record whose publish failed", left)
	}
	if err := DeleteAll(ctx, s, left); err != nil {
		t.Fatal(err)
	}
}
