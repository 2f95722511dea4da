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
			got.Topic != want.Topic || got.Group != want.Group || got.Handler != "work" || got.ErrorKind != deadletter.KindExhausted {
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
		id, err := s.Put(ctx, again)
		if err != nil || id != ids[2] {
			t.Fatalf("second Put of the same message: id %q (want %q), %v", id, ids[2], err)
		}
		got, _ := s.Get(ctx, id)
		if got.Attempts != 9 || got.Error != "later failure" || !got.FirstFailedAt.Equal(rec(2).FirstFailedAt) {
			t.Errorf("after update: %+v", got)
		}
		// put it back where it was for the paging test
		if _, err := s.Put(ctx, rec(2)); err != nil {
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
		bus := inproc.New(inproc.Options{})
		defer bus.Close()
		sub, _ := bus.Subscriber(ctx, bridge.Spec{Topic: rec(0).Topic, Group: "x", Kind: bridge.Command})
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
	t.Run("DeleteAndPurge", func(t *testing.T) {
		if err := s.Delete(ctx, ids[1]); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, ids[1]); !errors.Is(err, deadletter.ErrNotFound) {
			t.Errorf("second Delete: %v", err)
		}
		n, err := s.PurgeBefore(ctx, base.Add(4*time.Minute))
		if err != nil || n < 2 { // i = 2, 3 (0 replayed, 1 deleted)
			t.Errorf("PurgeBefore: %d, %v", n, err)
		}
		recs, _, _ := s.List(ctx, deadletter.Filter{Service: svc + ".v1"})
		if len(recs) != 3 { // i = 4, 5, 6
			t.Errorf("%d records left, want 3", len(recs))
		}
		for _, r := range recs {
			_ = s.Delete(ctx, r.ID)
		}
	})
}
