package engine_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/envelope"
)

// parityTrace is the edge's traceparent: every message of the conversation
// keeps its trace id.
const parityTrace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

// sighting is what one handler or middleware saw of one message, with the
// values that differ between runs by nature (ids, span ids, the deadline's
// instant, the unique names of the run) replaced by what they are.
type sighting struct {
	Metadata map[string]string // the message's, as a middleware sees it
	Meta     map[string]string // MetaFrom in the handler
	Route    engine.Route      // RouteFrom in the handler
	Produced []map[string]string
	// Watermill's router context values, as a middleware reads them
	Router [3]string // HandlerNameFromCtx, SubscriberNameFromCtx, SubscribeTopicFromCtx
}

// parityRun is everything the same service code showed on one backend.
type parityRun struct {
	Reply     ParityOut
	Error     string // code, reason, message and details of the refused call
	Sightings map[string]sighting
	Events    []string
}

type ParityIn struct {
	Name string `json:"name"`
}

type ParityOut struct {
	Greeting string `json:"greeting"`
	Inner    string `json:"inner"`
}

// runParity runs the services of the comparison on bus and returns what
// they saw. Names are unique to the run (durable backends keep streams);
// normalise maps them back.
func runParity(t *testing.T, bus bridge.Bridge, front, back string) parityRun {
	greet := engine.NewCommand[ParityIn, ParityOut](front, "1", "greet")
	inner := engine.NewCommand[ParityIn, ParityOut](back, "1", "inner")
	refuse := engine.NewCommand[ParityIn, ParityOut](back, "1", "refuse")
	greeted := engine.NewEvent[ParityOut](front + ".greeted")

	var mu sync.Mutex
	run := parityRun{Sightings: map[string]sighting{}}
	norm := normaliser{names: map[string]string{front: "front", back: "back"}}
	// observe is a middleware: it records the incoming message's metadata
	// and, after the handler, the metadata of what the handler produced
	// (the reply of a command); the handler adds its Meta and Route.
	observe := func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			rt, _ := engine.RouteFrom(msg.Context())
			key := norm.name(rt.Handler)
			md := norm.metadata(msg.Metadata)
			ctx := msg.Context()
			router := [3]string{norm.name(message.HandlerNameFromCtx(ctx)), message.SubscriberNameFromCtx(ctx), norm.name(message.SubscribeTopicFromCtx(ctx))}
			out, err := h(msg)
			mu.Lock()
			defer mu.Unlock()
			s := run.Sightings[key]
			s.Metadata = md
			s.Router = router
			for _, p := range out {
				s.Produced = append(s.Produced, norm.metadata(p.Metadata))
			}
			run.Sightings[key] = s
			return out, err
		}
	}
	saw := func(ctx context.Context) {
		rt, _ := engine.RouteFrom(ctx)
		meta := norm.meta(engine.MetaFrom(ctx))
		rt.Service, rt.Handler, rt.Group, rt.Topic = norm.name(rt.Service), norm.name(rt.Handler), norm.name(rt.Group), norm.name(rt.Topic)
		mu.Lock()
		defer mu.Unlock()
		s := run.Sightings[rt.Handler]
		s.Meta, s.Route = meta, rt
		run.Sightings[rt.Handler] = s
	}

	fs, bs, ls := engine.NewService(front, "1"), engine.NewService(back, "1"), engine.NewService(front+"-listener", "1")
	for _, s := range []*engine.Service{fs, bs, ls} {
		s.Use(observe)
	}
	engine.Handle(fs, greet, func(ctx context.Context, in ParityIn) (ParityOut, error) {
		saw(ctx)
		got, err := inner.Invoke(ctx, in)
		if err != nil {
			return ParityOut{}, err
		}
		out := ParityOut{Greeting: "hello " + in.Name, Inner: got.Inner}
		return out, greeted.Emit(ctx, out)
	})
	engine.Handle(bs, inner, func(ctx context.Context, in ParityIn) (ParityOut, error) {
		saw(ctx)
		return ParityOut{Inner: "inner saw " + in.Name}, nil
	})
	engine.Handle(bs, refuse, func(ctx context.Context, in ParityIn) (ParityOut, error) {
		saw(ctx)
		return ParityOut{}, &engine.Error{Code: http.StatusConflict, Reason: "taken", Message: in.Name + " is taken", Details: map[string]any{"name": in.Name, "tries": 3}}
	})
	engine.Subscribe(ls, greeted, func(ctx context.Context, ev ParityOut) error {
		saw(ctx)
		mu.Lock()
		defer mu.Unlock()
		run.Events = append(run.Events, ev.Greeting+" / "+ev.Inner)
		return nil
	})

	// Services and caller in two engines, as two processes would be.
	start(t, bus, engine.Config{Logger: slog.New(slog.DiscardHandler)}, fs, bs, ls)
	caller, _ := start(t, bus, engine.Config{Logger: slog.New(slog.DiscardHandler)})
	edge := engine.Meta{CorrelationID: "corr-parity", PrincipalID: "ada", TenantID: "acme", Traceparent: parityTrace}
	ctx := engine.WithMeta(engine.WithEngine(t.Context(), caller), edge)

	out, err := greet.Invoke(ctx, ParityIn{Name: "ada"})
	if err != nil {
		t.Fatal(err)
	}
	run.Reply = out
	_, err = refuse.Invoke(ctx, ParityIn{Name: "bob"})
	var we *engine.Error
	if !errorsAs(err, &we) {
		t.Fatalf("refuse: %v, want an *engine.Error", err)
	}
	run.Error = fmt.Sprintf("%d %s %q %v", we.Code, we.Reason, we.Message, we.Details)
	waitUntil(t, "the event delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(run.Events) == 1 && run.Sightings["front.greeted"].Metadata != nil
	})
	time.Sleep(100 * time.Millisecond) // a duplicate would show in Events
	mu.Lock()
	defer mu.Unlock()
	return run
}

func errorsAs(err error, target **engine.Error) bool {
	e, ok := err.(*engine.Error)
	if ok {
		*target = e
	}
	return ok
}

// normaliser replaces what differs between runs by nature.
type normaliser struct {
	names map[string]string // unique name → its role
}

func (n normaliser) name(s string) string {
	for unique, role := range n.names {
		s = strings.ReplaceAll(s, unique, role)
	}
	return s
}

// value replaces an id by "<id>", a traceparent by its trace id and
// "<span>", a deadline by "<deadline>", a reply topic by "reply.<instance>".
func (n normaliser) value(key, v string) string {
	switch {
	case v == "":
		return ""
	case key == envelope.KeyCausationID || key == "message_id":
		return "<id>"
	case key == envelope.KeyTraceparent:
		if !envelope.ValidTraceparent(v) {
			return "invalid:" + v
		}
		return v[:36] + "<span>" + v[52:]
	case key == envelope.KeyDeadline:
		if _, err := time.Parse(time.RFC3339Nano, v); err != nil {
			return "invalid:" + v
		}
		return "<deadline>"
	case key == envelope.KeyReplyTo && strings.HasPrefix(v, "reply."):
		return "reply.<instance>"
	}
	return n.name(v)
}

func (n normaliser) metadata(md message.Metadata) map[string]string {
	out := map[string]string{}
	for k, v := range md {
		out[k] = n.value(k, v)
	}
	return out
}

func (n normaliser) meta(m engine.Meta) map[string]string {
	d := ""
	if !m.Deadline.IsZero() {
		d = m.Deadline.Format(time.RFC3339Nano)
	}
	return n.metadata(message.Metadata{
		"message_id": m.MessageID, envelope.KeyCorrelationID: m.CorrelationID, envelope.KeyCausationID: m.CausationID,
		envelope.KeyTraceparent: m.Traceparent, envelope.KeyTracestate: m.Tracestate,
		envelope.KeyPrincipalID: m.PrincipalID, envelope.KeyTenantID: m.TenantID, envelope.KeyDeadline: d,
	})
}

// TestInProcessMatchesABroker runs the same service code in process (where
// calls and replies are handed over directly, inproc.Direct) and on NATS,
// and compares every observable: the reply, an error's code, reason,
// message and details, the metadata a middleware sees on every message and
// on the reply it produced, the Meta and Route a handler sees, and the
// events emitted. The direct hand-off must be a faster road to the same
// place, nothing else.
func TestInProcessMatchesABroker(t *testing.T) {
	runs := map[string]parityRun{}
	for _, name := range []string{"gochannel", "nats"} {
		t.Run(name, func(t *testing.T) {
			front, back := uniqueName("parityf"), uniqueName("parityb")
			if name == "nats" {
				natsStreams(t, front, back, "event."+front)
			}
			runs[name] = runParity(t, backends()[name](t), front, back)
		})
	}
	in, broker := runs["gochannel"], runs["nats"]
	if len(in.Sightings) == 0 || len(broker.Sightings) == 0 {
		t.Fatal("a run saw nothing")
	}
	if in.Reply != broker.Reply || in.Reply.Inner != "inner saw ada" {
		t.Errorf("reply: in process %+v, NATS %+v", in.Reply, broker.Reply)
	}
	if in.Error != broker.Error || !strings.HasPrefix(in.Error, "409 taken") {
		t.Errorf("error: in process %s, NATS %s", in.Error, broker.Error)
	}
	if !slices.Equal(in.Events, broker.Events) || len(in.Events) != 1 {
		t.Errorf("events: in process %q, NATS %q", in.Events, broker.Events)
	}
	for _, h := range slices.Sorted(maps.Keys(broker.Sightings)) {
		a, b := in.Sightings[h], broker.Sightings[h]
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s: what the handler and the middleware saw differs:\nin process %+v\nNATS       %+v", h, a, b)
		}
	}
	if want := []string{"front.greeted", "greet", "inner", "refuse"}; !slices.Equal(slices.Sorted(maps.Keys(in.Sightings)), want) {
		t.Errorf("in process, handlers seen: %v, want %v", slices.Sorted(maps.Keys(in.Sightings)), want)
	}
	// What the comparison rests on: the conversation's values arrive.
	g := in.Sightings["inner"]
	for k, want := range map[string]string{envelope.KeyCorrelationID: "corr-parity", envelope.KeyPrincipalID: "ada", envelope.KeyTenantID: "acme",
		envelope.KeyTraceparent: parityTrace[:36] + "<span>-01", bridge.DeliveryKey: "1", envelope.KeyKind: "command", envelope.KeyCausationID: "<id>"} {
		if g.Metadata[k] != want {
			t.Errorf("inner's metadata[%s] = %q, want %q (all: %v)", k, g.Metadata[k], want, g.Metadata)
		}
	}
	if len(g.Produced) != 1 || g.Produced[0][envelope.KeyKind] != "reply" {
		t.Errorf("inner produced %v, want its reply", g.Produced)
	}
}
