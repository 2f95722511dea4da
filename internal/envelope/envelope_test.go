package envelope_test

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/internal/envelope"
)

func TestTraceparent(t *testing.T) {
	t.Parallel()
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for s, want := range map[string]bool{
		tp: true,
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01": false, // zero trace id
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01": false, // zero span id
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01": false, // unknown version
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01": false, // upper case
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7":    false,
		"": false,
	} {
		if got := envelope.ValidTraceparent(s); got != want {
			t.Errorf("ValidTraceparent(%q) = %v", s, got)
		}
	}
	child := envelope.ChildTraceparent(tp)
	if !envelope.ValidTraceparent(child) || envelope.TraceID(child) != envelope.TraceID(tp) || child[36:52] == tp[36:52] || child[53:] != "01" {
		t.Errorf("child %q of %q: want same trace and flags, new span", child, tp)
	}
	fresh := envelope.ChildTraceparent("garbage")
	if !envelope.ValidTraceparent(fresh) || envelope.TraceID(fresh) == envelope.TraceID(tp) {
		t.Errorf("new trace %q", fresh)
	}
}

// NewChild is Child with a new id: a version 4 UUID, distinct each time,
// and a traceparent in the parent's trace with a new span (a new trace at
// the edge, whose correlation id is the new id).
func TestNewChild(t *testing.T) {
	t.Parallel()
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	parent := envelope.Meta{MessageID: "m1", CorrelationID: "c1", Traceparent: tp}
	seen := map[string]bool{}
	for range 100 {
		c := envelope.NewChild(parent, time.Time{})
		if !uuid.MatchString(c.MessageID) || seen[c.MessageID] {
			t.Fatalf("id %q: want a new version 4 UUID", c.MessageID)
		}
		seen[c.MessageID] = true
		if envelope.TraceID(c.Traceparent) != envelope.TraceID(tp) || c.Traceparent[36:52] == tp[36:52] || c.CausationID != "m1" || c.CorrelationID != "c1" {
			t.Fatalf("child %+v of %+v", c, parent)
		}
		edge := envelope.NewChild(envelope.Meta{}, time.Time{})
		if !uuid.MatchString(edge.MessageID) || edge.CorrelationID != edge.MessageID || !envelope.ValidTraceparent(edge.Traceparent) || envelope.TraceID(edge.Traceparent) == envelope.TraceID(tp) {
			t.Fatalf("edge %+v", edge)
		}
	}
	if id := envelope.NewID(); !uuid.MatchString(id) {
		t.Errorf("NewID %q", id)
	}
}

func TestChildMetaAndRoundTrip(t *testing.T) {
	t.Parallel()
	d := time.Now().Add(time.Minute).UTC().Truncate(time.Microsecond)
	parent := envelope.Meta{MessageID: "m1", CorrelationID: "c1", PrincipalID: "p", TenantID: "t", Deadline: d,
		Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", Tracestate: "k=v"}
	later := envelope.Child(parent, "m2", d.Add(time.Hour))
	if later.Deadline != d || later.CausationID != "m1" || later.CorrelationID != "c1" || later.MessageID != "m2" {
		t.Errorf("child %+v: want the parent's earlier deadline, causation m1", later)
	}
	sooner := envelope.Child(parent, "m3", d.Add(-30*time.Second))
	if !sooner.Deadline.Equal(d.Add(-30 * time.Second)) {
		t.Errorf("child deadline %v, want the earlier one", sooner.Deadline)
	}
	edge := envelope.Child(envelope.Meta{}, "m4", time.Time{})
	if edge.CorrelationID != "m4" || edge.CausationID != "" || !envelope.ValidTraceparent(edge.Traceparent) {
		t.Errorf("edge meta %+v", edge)
	}

	msg := message.NewMessage("m2", nil)
	envelope.Write(msg, later)
	got := envelope.Read(msg)
	if got != later {
		t.Errorf("round trip: got %+v, want %+v", got, later)
	}
	msg.Metadata.Set(envelope.KeyDeadline, "tomorrow")
	msg.Metadata.Set(envelope.KeyTraceparent, "nope")
	if got := envelope.Read(msg); !got.Deadline.IsZero() || got.Traceparent != "" {
		t.Errorf("malformed deadline/traceparent not ignored: %+v", got)
	}
}

func TestErrorMatchingAndWire(t *testing.T) {
	t.Parallel()
	unavailable := &envelope.Error{Code: 503}
	circuit := &envelope.Error{Code: 503, Reason: "circuit_open"}
	e := &envelope.Error{Code: 503, Reason: "circuit_open", Message: "m", Details: map[string]any{"k": "v"}}
	if !errors.Is(e, unavailable) || !errors.Is(e, circuit) || errors.Is(&envelope.Error{Code: 503}, circuit) || errors.Is(e, &envelope.Error{Code: 504}) {
		t.Error("errors.Is by code and reason broken")
	}
	back := envelope.UnmarshalError(envelope.MarshalError(e))
	if back.Code != 503 || back.Reason != "circuit_open" || back.Message != "m" || back.Details["k"] != "v" {
		t.Errorf("wire round trip: %+v", back)
	}
	unencodable := &envelope.Error{Code: 400, Message: "x", Details: map[string]any{"f": func() {}}}
	if back := envelope.UnmarshalError(envelope.MarshalError(unencodable)); back.Code != 400 || back.Message != "x" {
		t.Errorf("unencodable details: %+v", back)
	}
	for _, bad := range []string{"", "{", `{"code":200}`, `{"code":"x"}`} {
		if got := envelope.UnmarshalError([]byte(bad)); got.Code != 502 {
			t.Errorf("UnmarshalError(%q) = %+v, want a 502", bad, got)
		}
	}
	for code, want := range map[int]bool{400: true, 404: true, 422: true, 408: false, 429: false, 500: false, 503: false} {
		if (&envelope.Error{Code: code}).Permanent() != want {
			t.Errorf("Permanent(%d) != %v", code, want)
		}
	}
	if s := e.Error(); !strings.Contains(s, "503 Service Unavailable (circuit_open): m") {
		t.Errorf("Error() = %q", s)
	}
}

type valueKey struct{}

// Handling carries values' values but not its cancellation, its own Meta,
// Route and value, and cancel's cancellation: a context derived from it
// ends with cancel at once (registered with it, not watched by a
// goroutine).
func TestHandling(t *testing.T) {
	values, endValues := context.WithCancel(context.WithValue(context.Background(), valueKey{}, "from the message"))
	endValues()
	hard, stop := context.WithCancel(context.Background())
	m := envelope.Meta{CorrelationID: "c"}
	r := envelope.Route{Service: "s.v1", Awaited: true}
	ctx := envelope.Handling(values, m, &envelope.Scope{Stop: hard, Engine: "own", Route: r})
	defer ctx.End()
	if ctx.Err() != nil {
		t.Fatal("cancelled with the message's context")
	}
	if got, _ := envelope.MetaFrom(ctx); got != m {
		t.Errorf("MetaFrom = %+v", got)
	}
	if got, _ := envelope.RouteFrom(ctx); got != r {
		t.Errorf("RouteFrom = %+v", got)
	}
	if ctx.Value(envelope.EngineKey{}) != "own" {
		t.Errorf("engine = %v", ctx.Value(envelope.EngineKey{}))
	}
	child, cancel := context.WithDeadline(ctx, time.Now().Add(time.Hour))
	defer cancel()
	stop()
	if !errors.Is(child.Err(), context.Canceled) {
		t.Errorf("derived context after cancel's end: %v, want Canceled at once", child.Err())
	}
	other := envelope.Handling(context.WithValue(context.Background(), valueKey{}, "msg"), m, &envelope.Scope{Stop: context.Background(), Route: r})
	if other.Value(valueKey{}) != "msg" {
		t.Errorf("the message context's value = %v", other.Value(valueKey{}))
	}
}

// A handler context ends at End, at its Meta's deadline and at stop's end,
// whether or not its cancellation was made before (Done, a derived
// context), with the error and cause a context.WithDeadline of stop would
// have; End after a deadline leaves DeadlineExceeded.
func TestHandlingEnds(t *testing.T) {
	t.Parallel()
	none := func() envelope.Meta { return envelope.Meta{} }
	soon := func() envelope.Meta { return envelope.Meta{Deadline: time.Now().Add(50 * time.Millisecond)} }
	for _, c := range []struct {
		name    string
		meta    func() envelope.Meta
		early   bool                                          // Done asked for before the end
		end     func(h *envelope.HandlerContext, stop func()) // what ends it
		want    error
		derived bool // a context derived before the end ends with it
	}{
		{"End, made before", none, true, endIt, context.Canceled, true},
		{"End, never made", none, false, endIt, context.Canceled, false},
		{"deadline, made before", soon, true, waitDeadline, context.DeadlineExceeded, true},
		{"deadline, never made", soon, false, waitDeadline, context.DeadlineExceeded, false},
		{"stop, made before", soon, true, stopIt, context.Canceled, true},
		{"stop, never made", soon, false, stopIt, context.Canceled, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			stopCtx, stop := context.WithCancel(context.Background())
			defer stop()
			m := c.meta()
			h := envelope.Handling(context.Background(), m, &envelope.Scope{Stop: stopCtx})
			defer h.End()
			if d, ok := h.Deadline(); ok != !m.Deadline.IsZero() || !d.Equal(m.Deadline) {
				t.Errorf("Deadline = %v, %v; want %v", d, ok, m.Deadline)
			}
			if h.Err() != nil {
				t.Fatalf("Err before the end: %v", h.Err())
			}
			var derived context.Context
			if c.early {
				var cancel context.CancelFunc
				derived, cancel = context.WithCancel(h)
				defer cancel()
			}
			c.end(h, stop)
			if !errors.Is(h.Err(), c.want) {
				t.Errorf("Err = %v, want %v", h.Err(), c.want)
			}
			if cause := context.Cause(h); !errors.Is(cause, c.want) {
				t.Errorf("Cause = %v, want %v", cause, c.want)
			}
			select {
			case <-h.Done():
			default:
				t.Error("Done not closed after the end")
			}
			if c.derived {
				select {
				case <-derived.Done():
				case <-time.After(10 * time.Second):
					t.Fatal("a context derived before the end did not end")
				}
			}
			after, cancel := context.WithCancel(h)
			defer cancel()
			if after.Err() == nil {
				t.Error("a context derived after the end runs")
			}
			h.End()
			if !errors.Is(h.Err(), c.want) {
				t.Errorf("Err after End = %v, want %v still", h.Err(), c.want)
			}
		})
	}
}

func endIt(h *envelope.HandlerContext, _ func())     { h.End() }
func stopIt(_ *envelope.HandlerContext, stop func()) { stop() }

// waitDeadline waits for the deadline by the clock, not by Done, so that a
// context never made is ended by its deadline alone.
func waitDeadline(h *envelope.HandlerContext, _ func()) {
	d, _ := h.Deadline()
	time.Sleep(time.Until(d) + time.Millisecond)
}

// Done, Err, Value and End from several goroutines at once (run with
// -race): one cancellation is made, and everyone sees it end.
func TestHandlingConcurrent(t *testing.T) {
	t.Parallel()
	h := envelope.Handling(context.Background(), envelope.Meta{}, &envelope.Scope{Stop: context.Background()})
	var wg sync.WaitGroup
	dones := make(chan (<-chan struct{}), 8)
	for range 8 {
		wg.Go(func() {
			_ = h.Err()
			_ = h.Value(valueKey{})
			_ = h.Value(otherKey{})
			dones <- h.Done()
		})
	}
	wg.Go(h.End)
	wg.Wait()
	close(dones)
	first := <-dones
	for d := range dones {
		if d != first {
			t.Fatal("two cancellations made")
		}
	}
	select {
	case <-first:
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed by End")
	}
}

type otherKey struct{}

// scheduled_for reads as Meta.ScheduledFor in UTC; a malformed or overlong
// value reads as absent, never an error; Child does not pass it on.
func TestScheduledFor(t *testing.T) {
	t.Parallel()
	at := time.Date(2030, 5, 6, 7, 8, 9, 123456789, time.FixedZone("X", 3600))
	for value, want := range map[string]time.Time{
		envelope.FormatTime(at):               at,
		"2030-05-06T07:08:09.123456789+01:00": at,
		"":                                    {},
		"tomorrow":                            {},
		"2030-13-06T07:08:09Z":                {},
		strings.Repeat("9", 5000):             {},
		"2030-05-06T07:08:09Z" + strings.Repeat(" ", 60): {},
	} {
		msg := message.NewMessage("id", nil)
		msg.Metadata.Set(envelope.KeyScheduledFor, value)
		m := envelope.Read(msg)
		if !m.ScheduledFor.Equal(want) || !m.ScheduledFor.IsZero() && m.ScheduledFor.Location() != time.UTC {
			t.Errorf("scheduled_for %.40q read as %v, want %v in UTC", value, m.ScheduledFor, want)
		}
		if c := envelope.Child(m, "child", time.Time{}); !c.ScheduledFor.IsZero() {
			t.Errorf("Child kept ScheduledFor %v", c.ScheduledFor)
		}
	}
	out := message.NewMessage("id", nil)
	envelope.Write(out, envelope.Meta{ScheduledFor: at})
	if got := out.Metadata.Get(envelope.KeyScheduledFor); got != "2030-05-06T06:08:09.123456789Z" {
		t.Errorf("Write: scheduled_for %q, want RFC 3339 nano in UTC", got)
	}
}
