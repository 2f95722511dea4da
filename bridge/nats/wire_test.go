package nats_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/bridgetest"
	"github.com/switchboard-go/switchboard/bridge/nats"
	"github.com/switchboard-go/switchboard/router"
)

func TestBadReplyPrefix(t *testing.T) {
	for _, v := range []string{"", "a b", "*", ">", "reply.*", "reply.>", ".reply", "a..b", "reply\t", "rép", strings.Repeat("r", 65)} {
		_, err := bridge.Open(t.Context(), withParams(t, "reply_prefix="+url.QueryEscape(v)))
		if !errors.Is(err, bridge.ErrBadURL) || !strings.Contains(err.Error(), "reply_prefix") {
			t.Errorf("reply_prefix=%q: %v, want ErrBadURL naming reply_prefix", v, err)
		}
	}
	for _, v := range []string{"reply.", "reply", "my-app.reply."} {
		openURL(t, withParams(t, "reply_prefix="+url.QueryEscape(v)))
	}
}

// TestMaxMessageBytes: the bridge declares the server's max_payload less
// its header framing, and a message the server refuses as too large fails
// with ErrTooLarge, not as unreachable.
func TestMaxMessageBytes(t *testing.T) {
	b := openURL(t, withParams(t, ""))
	limit := b.Capabilities().MaxMessageBytes
	if limit < 1000 || limit > 64<<20 {
		t.Fatalf("MaxMessageBytes = %d", limit)
	}
	topic := "wire.too-large." + watermill.NewShortUUID()
	sub, err := b.Subscriber(t.Context(), bridge.Spec{Topic: topic, Group: "g", Kind: bridge.Command, Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	t.Cleanup(func() {
		js := jetStream(t)
		if name, err := js.StreamNameBySubject(t.Context(), topic); err == nil {
			_ = js.DeleteStream(t.Context(), name)
		}
	})
	err = b.Publisher().Publish(topic, message.NewMessage(watermill.NewUUID(), make([]byte, limit+2048)))
	if !errors.Is(err, bridge.ErrTooLarge) || errors.Is(err, bridge.ErrUnreachable) {
		t.Errorf("publishing %d bytes: %v, want ErrTooLarge", limit+2048, err)
	}
	md := message.NewMessage(watermill.NewUUID(), make([]byte, limit-16384))
	for i := range 4 {
		md.Metadata.Set(strings.Repeat("k", i+1), strings.Repeat("v", 4000))
	}
	if err := b.Publisher().Publish(topic, md); err != nil {
		t.Errorf("publishing MaxMessageBytes: %v", err)
	}
}

// TestEngineReplyTopicsWithAnotherReplyPrefix: whatever reply_prefix says,
// a topic under the engine's reply prefix ("reply.", router.ReplyPrefix)
// is a reply topic: publishing to one nobody owns fails with
// ErrNoSubscriber and creates no stream (reply_to comes from the wire).
func TestEngineReplyTopicsWithAnotherReplyPrefix(t *testing.T) {
	if nats.DefaultReplyPrefix != router.ReplyPrefix {
		t.Fatalf("DefaultReplyPrefix %q, the engine's reply topics start with %q", nats.DefaultReplyPrefix, router.ReplyPrefix)
	}
	b := openURL(t, withParams(t, "reply_prefix="+url.QueryEscape("my-app.reply.")))
	for _, topic := range []string{router.ReplyTopic(bridgetest.Unique("gone")), "my-app.reply." + bridgetest.Unique("gone")} {
		err := b.Publisher().Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("orphan")))
		if !errors.Is(err, bridge.ErrNoSubscriber) {
			t.Errorf("publish to %s: %v, want ErrNoSubscriber", topic, err)
		}
		if name, err := jetStream(t).StreamNameBySubject(t.Context(), topic); !errors.Is(err, jetstream.ErrStreamNotFound) {
			_ = jetStream(t).DeleteStream(t.Context(), name)
			t.Errorf("publishing to %s created stream %q", topic, name)
		}
	}
}

// TestUnencodableMetadataIsRefused: metadata NATS headers cannot carry is a
// permanent refusal (bridge.ErrRefused), not an outage, and the bridge
// goes on publishing.
func TestUnencodableMetadataIsRefused(t *testing.T) {
	b := openURL(t, withParams(t, ""))
	spec := bridge.Spec{Topic: "sbtest." + bridgetest.Unique("hdr"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 1}
	ch, _ := bridgetest.Subscribe(t, b, spec)
	for _, md := range []message.Metadata{{"a b": "1"}, {"a:b": "1"}, {"é": "1"}, {"": "1"}, {"k": "x\r\ny"}, {"k": "x\x00"}} {
		m := message.NewMessage("id", []byte("{}"))
		m.Metadata = md
		err := b.Publisher().Publish(spec.Topic, m)
		if !errors.Is(err, bridge.ErrRefused) || errors.Is(err, bridge.ErrUnreachable) {
			t.Errorf("metadata %q: %v, want ErrRefused", md, err)
		}
	}
	m := message.NewMessage("ok", []byte("{}"))
	m.Metadata = message.Metadata{"Trace-Id_1.x": "any printable value: é, tabs\tand all"}
	if err := b.Publisher().Publish(spec.Topic, m); err != nil {
		t.Fatal(err)
	}
	got := bridgetest.Receive(t, ch, 10*time.Second)
	got.Ack()
	if got.Metadata.Get("Trace-Id_1.x") != m.Metadata.Get("Trace-Id_1.x") {
		t.Errorf("metadata %q arrived as %q", m.Metadata, got.Metadata)
	}
}
