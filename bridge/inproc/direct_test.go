package inproc_test

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/bridgetest"
	"github.com/switchboard-go/switchboard/bridge/inproc"
)

type ctxKey struct{}

// Call hands a message to a served member with room for it, in the
// caller's goroutine, as a first delivery with the member's context; a
// member without room leaves it to the group's queue, where a subscriber
// or the member's Next gets it; Requeue hands it back counted.
func TestCallServeNextRequeue(t *testing.T) {
	bus := inproc.New()
	t.Cleanup(func() { _ = bus.Close() })
	room := true
	var took []*message.Message
	ctx := context.WithValue(context.Background(), ctxKey{}, "member")
	m, err := bus.Serve(ctx, commands, func(_ *inproc.Member, msg *message.Message) bool {
		if msg == nil { // a pull: left to Next below
			return false
		}
		if room {
			took = append(took, msg)
		}
		return room
	})
	if err != nil {
		t.Fatal(err)
	}
	sent := message.NewMessage("one", []byte("1"))
	if err := bus.Call(commands.Topic, sent); err != nil {
		t.Fatal(err)
	}
	if len(took) != 1 || took[0] != sent {
		t.Fatalf("took %v, want the message itself", took)
	}
	if got := sent.Metadata.Get(bridge.DeliveryKey); got != "1" {
		t.Errorf("delivery %q, want 1", got)
	}
	if sent.Context().Value(ctxKey{}) != "member" {
		t.Error("the message does not carry the member's context")
	}

	room = false // no room: the queue keeps it for the member's Next
	if err := bus.Call(commands.Topic, message.NewMessage("two", []byte("2"))); err != nil {
		t.Fatal(err)
	}
	next := m.Next()
	if next == nil || next.UUID != "two" || next.Metadata.Get(bridge.DeliveryKey) != "1" || next.Context().Value(ctxKey{}) != "member" {
		t.Fatalf("Next = %v, want message two as a first delivery", next)
	}
	if again := m.Next(); again != nil {
		t.Errorf("Next on an empty queue = %v", again)
	}

	next.Metadata.Set(bridge.NackDelayKey, "10ms")
	m.Requeue(next)
	time.Sleep(50 * time.Millisecond)
	back := m.Next()
	if back == nil || back.UUID != "two" || back.Metadata.Get(bridge.DeliveryKey) != "2" {
		t.Fatalf("after Requeue, Next = %v, want message two as a second delivery", back)
	}
	if _, ok := back.Metadata[bridge.NackDelayKey]; ok {
		t.Error("the requeued message kept its nack delay")
	}

	// Stopped, the member is offered nothing and takes nothing; a
	// subscriber of the group gets what Call sends.
	m.Stop()
	room = true
	ch, _ := bridgetest.Subscribe(t, bus, commands)
	if err := bus.Call(commands.Topic, message.NewMessage("three", []byte("3"))); err != nil {
		t.Fatal(err)
	}
	got := bridgetest.Receive(t, ch, 5*time.Second)
	got.Ack()
	if got.UUID != "three" || len(took) != 1 {
		t.Errorf("after Stop: subscriber got %s, member took %d, want three and 1", got.UUID, len(took))
	}
	if m.Next() != nil {
		t.Error("a stopped member's Next took a message")
	}
}

// With several groups on the topic, Call gives each group a message of
// its own: handed over to a served member with room, queued for a
// subscriber otherwise. No group is ErrNoSubscriber, a closed bus
// ErrClosed.
func TestCallFansOutToEveryGroup(t *testing.T) {
	bus := inproc.New()
	events := bridge.Spec{Topic: "ev", Group: "a", Kind: bridge.Event, Concurrency: 1}
	var took []*message.Message
	_, err := bus.Serve(context.Background(), events, func(_ *inproc.Member, m *message.Message) bool {
		if m == nil { // a pull: nothing is queued here
			t.Error("offered a pull")
			return false
		}
		took = append(took, m)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	other := events
	other.Group = "b"
	ch, sub := bridgetest.Subscribe(t, bus, other)
	sent := message.NewMessage("e", []byte("{}"))
	sent.Metadata.Set("k", "v")
	if err := bus.Call(events.Topic, sent); err != nil {
		t.Fatal(err)
	}
	got := bridgetest.Receive(t, ch, 5*time.Second)
	got.Ack()
	if len(took) != 1 || took[0] == got {
		t.Fatalf("member took %d messages; the same as the subscriber's: %v", len(took), len(took) == 1 && took[0] == got)
	}
	for _, m := range []*message.Message{took[0], got} {
		if m.UUID != "e" || string(m.Payload) != "{}" || m.Metadata.Get("k") != "v" || m.Metadata.Get(bridge.DeliveryKey) != "1" {
			t.Errorf("delivered %s %s %v, want e {} with k=v as a first delivery", m.UUID, m.Payload, m.Metadata)
		}
	}
	if err := bus.Call("nobody", message.NewMessage("x", nil)); !errors.Is(err, bridge.ErrNoSubscriber) {
		t.Errorf("Call to a topic with no group: %v", err)
	}
	_ = sub.Close()
	_ = bus.Close()
	if err := bus.Call(events.Topic, message.NewMessage("y", nil)); !errors.Is(err, bridge.ErrClosed) {
		t.Errorf("Call on a closed bus: %v", err)
	}
}

// What waits in the queue reaches each group's member as a message of its
// own: Call's queued message itself (the group's alone), and a copy of
// Publish's snapshot, which every group's queue shares, so that one
// group's handling (its metadata, its ack) cannot reach another's.
func TestNextGivesEachGroupItsOwn(t *testing.T) {
	bus := inproc.New()
	t.Cleanup(func() { _ = bus.Close() })
	var members []*inproc.Member
	for _, g := range []string{"a", "b"} {
		spec := bridge.Spec{Topic: "ev", Group: g, Kind: bridge.Event, Concurrency: 1}
		m, err := bus.Serve(context.Background(), spec, func(*inproc.Member, *message.Message) bool { return false }) // no room: all queued
		if err != nil {
			t.Fatal(err)
		}
		members = append(members, m)
	}
	called := message.NewMessage("called", []byte("{}"))
	if err := bus.Call("ev", called); err != nil {
		t.Fatal(err)
	}
	if err := bus.Publisher().Publish("ev", message.NewMessage("published", []byte("{}"))); err != nil {
		t.Fatal(err)
	}
	var got [2][]*message.Message
	for i, m := range members {
		for range 2 {
			msg := m.Next()
			if msg == nil {
				t.Fatalf("group %d: Next found nothing", i)
			}
			if msg.Metadata.Get(bridge.DeliveryKey) != "1" || !msg.Ack() {
				t.Errorf("group %d: %s is not a first delivery not yet acked", i, msg.UUID)
			}
			msg.Metadata.Set("seen-by", strconv.Itoa(i))
			got[i] = append(got[i], msg)
		}
		if got[i][0].UUID != "called" || got[i][1].UUID != "published" {
			t.Fatalf("group %d got %s, %s", i, got[i][0].UUID, got[i][1].UUID)
		}
	}
	if got[1][0] != called {
		t.Error("the last group did not get Call's message itself")
	}
	for j := range 2 {
		if got[0][j] == got[1][j] || got[0][j].Metadata.Get("seen-by") != "0" || got[1][j].Metadata.Get("seen-by") != "1" {
			t.Errorf("%s: both groups share one message", got[0][j].UUID)
		}
	}
}

// An event group takes its messages in order: Call hands one over only
// when nothing of the group is ahead of it, neither queued nor fetched by
// a subscriber and not settled, and Next takes nothing while a fetched
// message is not settled (it may be waiting for the member's slot).
func TestEventCallKeepsOrder(t *testing.T) {
	bus := inproc.New()
	t.Cleanup(func() { _ = bus.Close() })
	events := bridge.Spec{Topic: "ev", Group: "a", Kind: bridge.Event, Concurrency: 1}
	call := func(id string) {
		t.Helper()
		if err := bus.Call(events.Topic, message.NewMessage(id, nil)); err != nil {
			t.Fatal(err)
		}
	}
	// Fetched ahead: a subscriber (before any member is served) holds "1".
	ch, sub := bridgetest.Subscribe(t, bus, events)
	call("1")
	held := bridgetest.Receive(t, ch, 5*time.Second)
	t.Cleanup(func() { held.Ack() }) // before the subscriber's Close, which waits for it

	room := false
	var took []string
	var pulls atomic.Int32 // offered from the goroutine that settles "1"
	m, err := bus.Serve(context.Background(), events, func(_ *inproc.Member, msg *message.Message) bool {
		if msg == nil {
			pulls.Add(1)
			return false // left to Next below
		}
		if room {
			took = append(took, msg.UUID)
		}
		return room
	})
	if err != nil {
		t.Fatal(err)
	}
	room = true
	call("2")
	if len(took) != 0 {
		t.Fatalf("took %v while a fetched message was not settled", took)
	}
	if next := m.Next(); next != nil {
		t.Fatalf("Next took %s while a fetched message was not settled", next.UUID)
	}
	// Queued ahead: "3" waits behind "2".
	call("3")
	if len(took) != 0 {
		t.Fatalf("took %v while a message was queued ahead", took)
	}
	held.Ack()
	bridgetest.WaitFor(t, 5*time.Second, "the fetched message settled", m.Pending)
	if pulls.Load() == 0 {
		t.Error("the member was not offered a pull once the fetched message settled")
	}
	for _, want := range []string{"2", "3"} {
		if next := m.Next(); next == nil || next.UUID != want {
			t.Fatalf("Next = %v, want %s", next, want)
		}
	}
	bridgetest.ExpectNothing(t, ch, 50*time.Millisecond) // a served group's subscribers fetch nothing

	// Nothing ahead: handed over.
	call("4")
	if len(took) != 1 || took[0] != "4" {
		t.Fatalf("took %v, want [4]", took)
	}
	_ = sub.Close()
}
