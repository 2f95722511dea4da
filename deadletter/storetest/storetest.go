package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/switchboard-go/switchboard/deadletter"
)

// Run checks s, each case of the package documentation a named subtest.
// The store must be empty of records whose Service starts with the
// prefixes the suite uses (it picks unique ones).
func Run(t *testing.T, s deadletter.Store) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, s) })
	}
}

// fixture is one case's records: rec(i) is the i-th, under a service name
// of its own.
type fixture struct {
	s    deadletter.Store
	svc  string
	base time.Time
	ids  map[int]string // of the records seed stored
}

// newFixture picks a unique service name; the case's records are purged
// when it ends.
func newFixture(t *testing.T, s deadletter.Store) *fixture {
	f := &fixture{s: s, svc: "svc" + watermill.NewShortUUID()[:8], base: time.Now().UTC().Truncate(time.Millisecond).Add(-time.Hour), ids: map[int]string{}}
	t.Cleanup(func() { _, _ = s.Purge(context.Background(), deadletter.Filter{Service: f.svc + ".v1"}) })
	return f
}

// seed is newFixture with records 0 to 6 stored.
func seed(t *testing.T, s deadletter.Store) *fixture {
	f := newFixture(t, s)
	for i := range 7 {
		id, err := s.Put(context.Background(), f.rec(i))
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		f.ids[i] = id
	}
	return f
}

func (f *fixture) rec(i int) deadletter.Record {
	svc, base := f.svc, f.base
	return deadletter.Record{
		MessageID: fmt.Sprintf("%s-msg-%d", svc, i), Topic: svc + ".v1.work", Service: svc + ".v1", Handler: "work",
		Group: svc + ".v1", Payload: []byte(fmt.Sprintf(`{"n":%d}`, i)), Metadata: map[string]string{"correlation_id": "c", "n": fmt.Sprint(i)},
		Error: fmt.Sprintf("boom %d", i%3), ErrorKind: deadletter.KindExhausted, Attempts: 5,
		FirstFailedAt: base.Add(time.Duration(i) * time.Minute), LastFailedAt: base.Add(time.Duration(i)*time.Minute + time.Second),
	}
}

// storeCase is one named case of the suite.
type storeCase struct {
	name string
	run  func(t *testing.T, s deadletter.Store)
}

// cases are Run's cases, in order; the package documentation lists their
// names (TestDocListsTheCases keeps the two the same).
var cases = []storeCase{
	{"GetRoundTrips", func(t *testing.T, s deadletter.Store) {
		ctx, f := context.Background(), seed(t, s)
		got, err := s.Get(ctx, f.ids[3])
		want := f.rec(3)
		want.ID = f.ids[3]
		if err != nil || got.MessageID != want.MessageID || string(got.Payload) != string(want.Payload) || got.Metadata["n"] != "3" ||
			got.Error != want.Error || got.Attempts != 5 || !got.FirstFailedAt.Equal(want.FirstFailedAt) || !got.LastFailedAt.Equal(want.LastFailedAt) ||
			got.Topic != want.Topic || got.Group != want.Group || got.Handler != "work" || got.ErrorKind != deadletter.KindExhausted ||
			got.Version != 1 {
			t.Errorf("Get = %+v, %v\nwant %+v", got, err, want)
		}
		if _, err := s.Get(ctx, "00000000-0000-0000-0000-000000000000"); !errors.Is(err, deadletter.ErrNotFound) {
			t.Errorf("Get unknown: %v", err)
		}
	}},
	{"PutIsIdempotentPerMessageAndGroup", func(t *testing.T, s deadletter.Store) {
		ctx, f := context.Background(), seed(t, s)
		again := f.rec(2)
		again.Attempts, again.Error = 9, "later failure"
		again.FirstFailedAt, again.LastFailedAt = f.base.Add(5*time.Hour), f.base.Add(5*time.Hour)
		again.Version = 100 // the store counts, not the caller
		id, err := s.Put(ctx, again)
		if err != nil || id != f.ids[2] {
			t.Fatalf("second Put of the same message: id %q (want %q), %v", id, f.ids[2], err)
		}
		got, _ := s.Get(ctx, id)
		if got.Attempts != 9 || got.Error != "later failure" || !got.FirstFailedAt.Equal(f.rec(2).FirstFailedAt) || got.Version != 2 {
			t.Errorf("after update: %+v", got)
		}
		if _, err := s.Put(ctx, f.rec(2)); err != nil { // and a third failure
			t.Fatal(err)
		}
	}},
	{"PutRefusesTheIDOfAnotherRecord", func(t *testing.T, s deadletter.Store) {
		ctx, f := context.Background(), seed(t, s)
		other := f.rec(20)
		other.ID = f.ids[4]
		if _, err := s.Put(ctx, other); err == nil {
			t.Error("Put of a new message with the id of another record succeeded")
		}
		if got, err := s.Get(ctx, f.ids[4]); err != nil || got.MessageID != f.rec(4).MessageID || got.Version != 1 {
			t.Errorf("record 4 after a Put of another message with its id: %+v, %v", got, err)
		}
	}},
	{"KeyIncludesTheTopic", func(t *testing.T, s deadletter.Store) {
		// The same message id and group on another topic is another
		// message (ids are only unique per publisher): it must not
		// overwrite the record of the first.
		ctx, f := context.Background(), seed(t, s)
		other := f.rec(5)
		other.Topic, other.Error = f.svc+".v1.other", "other topic"
		id, err := s.Put(ctx, other)
		if err != nil {
			t.Fatal(err)
		}
		if id == f.ids[5] {
			t.Fatalf("a record of topic %s took the id of the record of topic %s", other.Topic, f.rec(5).Topic)
		}
		first, err := s.Get(ctx, f.ids[5])
		if err != nil || first.Topic != f.rec(5).Topic || first.Error != f.rec(5).Error {
			t.Errorf("first record after a Put on another topic: %+v, %v", first, err)
		}
		if err := s.Delete(ctx, id, 1); err != nil {
			t.Fatal(err)
		}
	}},
	{"ListFiltersAndPages", func(t *testing.T, s deadletter.Store) {
		ctx, f := context.Background(), seed(t, s)
		svc, base := f.svc, f.base
		var seen []string
		filter := deadletter.Filter{Service: svc + ".v1", Limit: 3}
		for page := 0; ; page++ {
			recs, next, err := s.List(ctx, filter)
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
			filter.After = next
		}
		if len(seen) != 7 || seen[0] != f.rec(0).MessageID || seen[6] != f.rec(6).MessageID {
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
	}},
	{"ReplayGoesToTheFailedGroupAndRemovesTheRecord", func(t *testing.T, s deadletter.Store) {
		ctx, f := context.Background(), seed(t, s)
		var pub recorder
		if err := deadletter.Replay(ctx, s, &pub, f.ids[0]); err != nil {
			t.Fatal(err)
		}
		sent := pub.published()
		if len(sent) != 1 || sent[0].topic != f.rec(0).Topic {
			t.Fatalf("replay published %d messages (%v), want 1 to %s", len(sent), sent, f.rec(0).Topic)
		}
		m := sent[0].msg
		if m.UUID != f.rec(0).MessageID || string(m.Payload) != `{"n":0}` || m.Metadata.Get(deadletter.TargetGroupKey) != f.rec(0).Group || m.Metadata.Get("n") != "0" {
			t.Errorf("replayed %s %s %v", m.UUID, m.Payload, m.Metadata)
		}
		if _, err := s.Get(ctx, f.ids[0]); !errors.Is(err, deadletter.ErrNotFound) {
			t.Errorf("replayed record still stored: %v", err)
		}
	}},
	{"DeleteComparesTheVersion", func(t *testing.T, s deadletter.Store) {
		ctx, f := context.Background(), seed(t, s)
		if _, err := s.Put(ctx, f.rec(1)); err != nil { // a new failure: version 2
			t.Fatal(err)
		}
		if err := s.Delete(ctx, f.ids[1], 1); !errors.Is(err, deadletter.ErrChanged) {
			t.Errorf("Delete of version 1 of a record at version 2: %v, want ErrChanged", err)
		}
		if _, err := s.Get(ctx, f.ids[1]); err != nil {
			t.Fatalf("a Delete of a stale version removed the record: %v", err)
		}
		if err := s.Delete(ctx, f.ids[1], 2); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, f.ids[1], 2); !errors.Is(err, deadletter.ErrNotFound) {
			t.Errorf("second Delete: %v", err)
		}
		// The key is free again: a new failure is a new record.
		id, err := s.Put(ctx, f.rec(1))
		if err != nil || id == f.ids[1] {
			t.Fatalf("Put after Delete: id %q (deleted one %q), %v", id, f.ids[1], err)
		}
		if got, err := s.Get(ctx, id); err != nil || got.Version != 1 {
			t.Errorf("new record after Delete: version %d, %v", got.Version, err)
		}
		if err := s.Delete(ctx, id, 1); err != nil {
			t.Fatal(err)
		}
	}},
	{"PurgeFilters", func(t *testing.T, s deadletter.Store) {
		ctx, f := context.Background(), seed(t, s)
		svc, base := f.svc, f.base
		for _, i := range []int{0, 1} {
			if err := s.Delete(ctx, f.ids[i], 1); err != nil {
				t.Fatal(err)
			}
		}
		// Left: i = 2..6; rec(i).Error is "boom i%3".
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
		if len(recs) != 1 || recs[0].ID != f.ids[5] {
			t.Errorf("left after the purges: %+v, want record 5 only", recs)
		}
		if n, err := s.Purge(ctx, mine); n != 1 || err != nil {
			t.Errorf("Purge of the rest: %d, %v", n, err)
		}
	}},
	{"ReplayKeepsAFailureWrittenBeforeTheDelete", func(t *testing.T, s deadletter.Store) {
		replayKeepsAFailureWrittenBeforeTheDelete(t, s, newFixture(t, s).rec(7))
	}},
	{"ReplayAllCounts", func(t *testing.T, s deadletter.Store) {
		f := newFixture(t, s)
		replayAllCounts(t, s, [3]deadletter.Record{f.rec(8), f.rec(9), f.rec(10)})
	}},
}
