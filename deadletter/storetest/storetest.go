// Package storetest is the conformance suite every deadletter.Store runs.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/deadletter"
)

// Run checks s. The store must be empty of records whose Service starts
// with the prefix the suite uses (it picks a unique one).
func Run(t *testing.T, s deadletter.Store) {
	ctx := context.Background()
	svc := "svc" + watermill.NewShortUUID()[:8]
	base := time.Now().UTC().Truncate(time.Millisecond).Add(-time.Hour)
	rec := func(i int) deadletter.Record {
		return deadletter.Record{
			MessageID: fmt.Sprintf("%s-msg-%d", svc, i), Topic: svc + ".v1.work", Service: svc + ".v1", Handler: "work",
			Group: svc + ".v1", Payload: []byte(fmt.Sprintf(`{"n":%d}`, i)), Metadata: map[string]string{"correlation_id": "c", "n": fmt.Sprint(i)},
			Error: fmt.Sprintf("boom %d", i%3), ErrorKind: deadletter.KindExhausted, Attempts: 5,
			FirstFailedAt: base.Add(time.Duration(i) * time.Minute), LastFailedAt: base.Add(time.Duration(i)*time.Minute + time.Second),
		}
	}
	ids := map[int]string{}
	for i := range 7 {
		id, err := s.Put(ctx, rec(i))
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		ids[i] = id
	}

	t.Run("GetRoundTrips", func(t *testing.T) {
		got, err := s.Get(ctx, ids[3])
		want := rec(3)
		want.ID = ids[3]
		if err != nil || got.MessageID != want.MessageID || string(got.Payload) != string(want.Payload) || got.Metadata["n"] != "3" ||
			got.Error != want.Error || got.Attempts != 5 || !got.FirstFailedAt.Equal(want.FirstFailedAt) || !got.LastFailedAt.Equal(want.LastFailedAt) ||
			got.Topic != want.Topic || got.Group != want.Group || got.Handler != "work" || got.ErrorKind != deadletter.KindExhausted ||
			got.Version != 1 {
			t.Errorf("Get = %+v, %v\nwant %+v", got, err, want)
		}
		if _, err := s.Get(ctx, "00000000-0000-0000-0000-000000000000"); !errors.Is(err, deadletter.ErrNotFound) {
			t.Errorf("Get unknown: %v", err)
		}
	})
	t.Run("PutIsIdempotentPerMessageAndGroup", func(t *testing.T) {
		again := rec(2)
		again.Attempts, again.Error = 9, "later failure"
		again.FirstFailedAt, again.LastFailedAt = base.Add(5*time.Hour), base.Add(5*time.Hour)
		again.Version = 100 // the store counts, not the caller
		id, err := s.Put(ctx, again)
		if err != nil || id != ids[2] {
			t.Fatalf("second Put of the same message: id %q (want %q), %v", id, ids[2], err)
		}
		got, _ := s.Get(ctx, id)
		if got.Attempts != 9 || got.Error != "later failure" || !got.FirstFailedAt.Equal(rec(2).FirstFailedAt) || got.Version != 2 {
			t.Errorf("after update: %+v", got)
		}
		// put it back where it was for the paging test
		if _, err := s.Put(ctx, rec(2)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("PutRefusesTheIDOfAnotherRecord", func(t *testing.T) {
		other := rec(20)
		other.ID = ids[4]
		if _, err := s.Put(ctx, other); err == nil {
			t.Error("Put of a new message with the id of another record succeeded")
		}
		if got, err := s.Get(ctx, ids[4]); err != nil || got.MessageID != rec(4).MessageID || got.Version != 1 {
			t.Errorf("record 4 after a Put of another message with its id: %+v, %v", got, err)
		}
	})
	t.Run("KeyIncludesTheTopic", func(t *testing.T) {
		// The same message id and group on another topic is another
		// message (ids are only unique per publisher): it must not
		// overwrite the record of the first.
		other := rec(5)
		other.Topic, other.Error = svc+".v1.other", "other topic"
		id, err := s.Put(ctx, other)
		if err != nil {
			t.Fatal(err)
		}
		if id == ids[5] {
			t.Fatalf("a record of topic %s took the id of the record of topic %s", other.Topic, rec(5).Topic)
		}
		first, err := s.Get(ctx, ids[5])
		if err != nil || first.Topic != rec(5).Topic || first.Error != rec(5).Error {
			t.Errorf("first record after a Put on another topic: %+v, %v", first, err)
		}
		if err := s.Delete(ctx, id, 1); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("ListFiltersAndPages", func(t *testing.T) {
		var seen []string
		f := deadletter.Filter{Service: svc + ".v1", Limit: 3}
		for page := 0; ; page++ {
			recs, next, err := s.List(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				seen = append(seen, r.MessageID)
			}
			if next == "" {
				break
			}
			if page > 5 {
				t.Fatal("paging does not end")
			}
			f.After = next
		}
		if len(seen) != 7 || seen[0] != rec(0).MessageID || seen[6] != rec(6).MessageID {
			t.Errorf("paged through %v", seen)
		}
		recs, _, _ := s.List(ctx, deadletter.Filter{Service: svc + ".v1", ErrorContains: "BOOM 1"})
		if len(recs) != 2 { // i = 1, 4
			t.Errorf("error filter: %d records", len(recs))
		}
		recs, _, _ = s.List(ctx, deadletter.Filter{Topic: svc + ".v1.work", Since: base.Add(2 * time.Minute), Until: base.Add(4 * time.Minute)})
		if len(recs) != 2 { // i = 2, 3
			t.Errorf("time filter: %d records", len(recs))
		}
		recs, _, _ = s.List(ctx, deadletter.Filter{Service: svc + ".v1", Handler: "other"})
		if len(recs) != 0 {
			t.Errorf("handler filter: %d records", len(recs))
		}
	})
	t.Run("ReplayGoesToTheFailedGroupAndRemovesTheRecord", func(t *testing.T) {
		bus := inproc.New()
		defer bus.Close()
		sub, _ := bus.Subscriber(ctx, bridge.Spec{Topic: rec(0).Topic, Group: "x", Kind: bridge.Command, Concurrency: 1})
		ch, _ := sub.Subscribe(ctx, rec(0).Topic)
		if err := deadletter.Replay(ctx, s, bus.Publisher(), ids[0]); err != nil {
			t.Fatal(err)
		}
		var m *message.Message
		select {
		case m = <-ch:
			m.Ack()
		case <-time.After(5 * time.Second):
			t.Fatal("replayed message not published")
		}
		if m.UUID != rec(0).MessageID || string(m.Payload) != `{"n":0}` || m.Metadata.Get(deadletter.TargetGroupKey) != rec(0).Group || m.Metadata.Get("n") != "0" {
			t.Errorf("replayed %s %s %v", m.UUID, m.Payload, m.Metadata)
		}
		if _, err := s.Get(ctx, ids[0]); !errors.Is(err, deadletter.ErrNotFound) {
			t.Errorf("replayed record still stored: %v", err)
		}
	})
	t.Run("DeleteComparesTheVersion", func(t *testing.T) {
		if _, err := s.Put(ctx, rec(1)); err != nil { // a new failure: version 2
			t.Fatal(err)
		}
		if err := s.Delete(ctx, ids[1], 1); !errors.Is(err, deadletter.ErrChanged) {
			t.Errorf("Delete of version 1 of a record at version 2: %v, want ErrChanged", err)
		}
		if _, err := s.Get(ctx, ids[1]); err != nil {
			t.Fatalf("a Delete of a stale version removed the record: %v", err)
		}
		if err := s.Delete(ctx, ids[1], 2); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, ids[1], 2); !errors.Is(err, deadletter.ErrNotFound) {
			t.Errorf("second Delete: %v", err)
		}
		// The key is free again: a new failure is a new record.
		id, err := s.Put(ctx, rec(1))
		if err != nil || id == ids[1] {
			t.Fatalf("Put after Delete: id %q (deleted one %q), %v", id, ids[1], err)
		}
		if got, err := s.Get(ctx, id); err != nil || got.Version != 1 {
			t.Errorf("new record after Delete: version %d, %v", got.Version, err)
		}
		if err := s.Delete(ctx, id, 1); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("PurgeFilters", func(t *testing.T) {
		// Left: i = 2..6 (0 replayed, 1 deleted); rec(i).Error is "boom i%3".
		mine := deadletter.Filter{Service: svc + ".v1"}
		for _, c := range []struct {
			f    deadletter.Filter
			want int
		}{
			{deadletter.Filter{Service: svc + ".v1", Handler: "other"}, 0},
			{deadletter.Filter{Service: svc + ".v1", Until: base.Add(4 * time.Minute)}, 2},    // i = 2, 3
			{deadletter.Filter{Service: svc + ".v1", ErrorContains: "BOOM 1", Limit: 1}, 1},   // i = 4; Limit is ignored
			{deadletter.Filter{Topic: svc + ".v1.work", Since: base.Add(6 * time.Minute)}, 1}, // i = 6
		} {
			if n, err := s.Purge(ctx, c.f); n != c.want || err != nil {
				t.Errorf("Purge(%+v) = %d, %v; want %d", c.f, n, err, c.want)
			}
		}
		recs, _, _ := s.List(ctx, mine)
		if len(recs) != 1 || recs[0].ID != ids[5] {
			t.Errorf("left after the purges: %+v, want record 5 only", recs)
		}
		if n, err := s.Purge(ctx, mine); n != 1 || err != nil {
			t.Errorf("Purge of the rest: %d, %v", n, err)
		}
	})
	t.Run("ReplayKeepsAFailureWrittenBeforeTheDelete", func(t *testing.T) {
		replayKeepsAFailureWrittenBeforeTheDelete(t, s, rec(7))
	})
	t.Run("ReplayAllCounts", func(t *testing.T) {
		replayAllCounts(t, s, [3]deadletter.Record{rec(8), rec(9), rec(10)})
	})
	t.Run("ReplayedMessagesThatFailAgainAreKept", func(t *testing.T) {
		replayedMessagesThatFailAgainAreKept(t, s, svc+"r")
	})
	t.Run("ReplayAllReplaysEachRecordOnce", func(t *testing.T) {
		replayAllEnds(t, s, svc+"a")
	})
}
