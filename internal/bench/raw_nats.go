package main

import (
	"context"
	"errors"
	"strings"

	wnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsTransport is watermill-nats' pkg/nats with JetStream, configured as
// its documentation and example show: AutoProvision (a stream per topic,
// named after it), DeliverAll + AckExplicit subscribe options, the default
// NATSMarshaler, SubscribersCount 1, synchronous acks; a consumer group is
// QueueGroupPrefix (the durable queue consumer of that name).
//
// Request/reply subscribes once per request. AutoProvision would create a
// stream per request topic, so replies go to one stream provisioned here
// whose subjects are <prefix>_reply.>; each request subscribes to its own
// subject (an ephemeral consumer filtered on it), and the reply publisher
// does not auto-provision.
//
// Tuned (the "tuned" variant, not the documented setup): the streams of
// every topic are created here and nothing auto-provisions (no stream
// lookup per publish), and subscribers ack with AckAsync (Ack instead of
// AckSync: no round trip per message before the next is handled).
func natsTransport(url, prefix string, mgr jetstream.JetStream, tuned bool) func(context.Context, string) (*transport, error) {
	autoProvision := !tuned
	return func(ctx context.Context, ns string) (_ *transport, err error) {
		base := prefix + ns
		topic := func(name string) string { return base + "_" + name }
		streams := []jetstream.StreamConfig{{Name: base + "_replies", Subjects: []string{base + "_reply.>"}}}
		if !autoProvision {
			for _, v := range []any{&EchoCmd{}, &FrontCmd{}, &ItemEvent{}} {
				t := topic(cqrs.StructName(v))
				streams = append(streams, jetstream.StreamConfig{Name: t, Subjects: []string{t}})
			}
		}
		for _, sc := range streams {
			if _, err := mgr.CreateStream(ctx, sc); err != nil {
				return nil, err
			}
		}
		subOpts := []nats.SubOpt{nats.DeliverAll(), nats.AckExplicit()}
		var closers []func() error
		closeAll := func() error {
			var errs []error
			for _, c := range closers {
				errs = append(errs, c())
			}
			return errors.Join(errs...)
		}
		defer func() {
			if err != nil {
				err = errors.Join(err, closeAll())
			}
		}()
		pub, err := wnats.NewPublisher(wnats.PublisherConfig{URL: url, JetStream: wnats.JetStreamConfig{AutoProvision: autoProvision}}, wlog)
		if err != nil {
			return nil, err
		}
		closers = append(closers, pub.Close)
		replyPub, err := wnats.NewPublisher(wnats.PublisherConfig{URL: url}, wlog)
		if err != nil {
			return nil, err
		}
		closers = append(closers, replyPub.Close)
		replySub, err := wnats.NewSubscriber(wnats.SubscriberConfig{URL: url, JetStream: wnats.JetStreamConfig{SubscribeOptions: subOpts}}, wlog)
		if err != nil {
			return nil, err
		}
		closers = append(closers, replySub.Close)
		group := func(g string) (message.Subscriber, error) {
			return wnats.NewSubscriber(wnats.SubscriberConfig{
				URL:              url,
				QueueGroupPrefix: g,
				JetStream:        wnats.JetStreamConfig{AutoProvision: autoProvision, AckAsync: tuned, SubscribeOptions: subOpts},
			}, wlog)
		}
		return &transport{
			cmdPub: pub, evtPub: pub, replyPub: replyPub,
			cmdSub: group, evtSub: group, replySub: replySub,
			topic:      topic,
			replyTopic: func(opID string) string { return base + "_reply." + opID },
			durable:    true,
			close:      closeAll,
		}, nil
	}
}

// deleteStreams deletes every stream whose name starts with one of prefixes.
func deleteStreams(ctx context.Context, mgr jetstream.JetStream, prefixes ...string) error {
	names := mgr.StreamNames(ctx)
	var doomed []string
	for n := range names.Name() {
		for _, p := range prefixes {
			if strings.HasPrefix(n, p) {
				doomed = append(doomed, n)
				break
			}
		}
	}
	errs := []error{names.Err()}
	for _, n := range doomed {
		errs = append(errs, mgr.DeleteStream(ctx, n))
	}
	return errors.Join(errs...)
}
