package nats

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-go/switchboard/bridge"
)

// publisherStream returns the stream that stores topic, from the cache or
// from the server, creating it unless topic is a reply topic.
func (b *natsBridge) publisherStream(topic string) (string, error) {
	b.mu.Lock()
	name, ok := b.streams[topic]
	b.mu.Unlock()
	if ok {
		return name, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	if b.isReplyTopic(topic) {
		name, err := b.js.StreamNameBySubject(ctx, topic)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return "", fmt.Errorf("%w %q: no reply stream (its owner is gone)", bridge.ErrNoSubscriber, topic)
		}
		if err != nil {
			return "", b.adminErr("look up the stream of "+strconv.Quote(topic), err)
		}
		b.cacheStream(topic, name)
		return name, nil
	}
	name, err := b.ensureStream(ctx, topic, false)
	if err != nil {
		return "", err
	}
	b.cacheStream(topic, name)
	return name, nil
}

// isReplyTopic reports whether the publisher must not create a stream for
// topic: it starts with reply_prefix, or with DefaultReplyPrefix, which
// starts every reply topic the engine uses (a request's reply_to, from the
// wire), whatever reply_prefix says.
func (b *natsBridge) isReplyTopic(topic string) bool {
	return strings.HasPrefix(topic, DefaultReplyPrefix) || strings.HasPrefix(topic, b.opts.replyPrefix)
}

// maxCachedStreams bounds the publisher's topic → stream cache: topics
// come from the wire (a request's reply_to) and from instances that come
// and go, so the cache must not grow with them.
const maxCachedStreams = 1024

func (b *natsBridge) cacheStream(topic, name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.streams[topic]; !ok && len(b.streams) >= maxCachedStreams {
		for t := range b.streams { // evict one, whichever: a miss costs one lookup
			delete(b.streams, t)
			break
		}
	}
	b.streams[topic] = name
}

func (b *natsBridge) forgetStream(topic string) {
	b.mu.Lock()
	delete(b.streams, topic)
	b.mu.Unlock()
}

// adminErr wraps an error of a JetStream management call, marking it
// ErrUnreachable when the connection is down.
func (b *natsBridge) adminErr(what string, err error) error {
	if !b.conn.IsConnected() || errors.Is(err, natsgo.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
		return fmt.Errorf("%w: nats at %s: %s: %w", bridge.ErrUnreachable, b.shown, what, err)
	}
	return fmt.Errorf("nats: %s: %w", what, err)
}

// ensureStream returns the stream that stores topic. An existing stream
// whose subjects cover topic is used as it is (so operators may provision
// streams themselves); otherwise the backend's own stream is created. Reply
// streams live in memory and are removed once consumed.
func (b *natsBridge) ensureStream(ctx context.Context, topic string, reply bool) (string, error) {
	found, err := b.js.StreamNameBySubject(ctx, topic)
	if err == nil {
		return found, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return "", b.adminErr("look up the stream of "+strconv.Quote(topic), err)
	}
	cfg := jetstream.StreamConfig{
		Name:        streamName(b.opts.streamPrefix, topic),
		Description: "switchboard topic " + topic,
		Subjects:    []string{topic},
		Retention:   b.opts.retention,
		Storage:     jetstream.FileStorage,
		Replicas:    b.opts.replicas,
		MaxAge:      b.opts.maxAge,
		Discard:     jetstream.DiscardOld,
	}
	if reply {
		cfg.Description = "switchboard reply topic " + topic
		cfg.Retention = jetstream.WorkQueuePolicy
		cfg.Storage = jetstream.MemoryStorage
		cfg.Replicas = 1
		cfg.MaxAge = ReplyMaxAge
	}
	if _, err := b.js.CreateStream(ctx, cfg); err != nil {
		// Another process may have won the race, with other settings.
		if found, lerr := b.js.StreamNameBySubject(ctx, topic); lerr == nil {
			return found, nil
		}
		return "", b.adminErr("create stream "+cfg.Name+" for "+strconv.Quote(topic), err)
	}
	b.log.Debug("nats: stream created", "stream", cfg.Name, "topic", topic, "reply", reply)
	return cfg.Name, nil
}

// consumerConfig is the durable pull consumer of spec's group.
func (b *natsBridge) consumerConfig(spec bridge.Spec) jetstream.ConsumerConfig {
	cfg := jetstream.ConsumerConfig{
		Durable:       consumerName(spec.Topic, spec.Group),
		Description:   fmt.Sprintf("switchboard %s group %s on %s", spec.Kind, spec.Group, spec.Topic),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       b.opts.ackWait,
		MaxDeliver:    -1, // never drop: dead-lettering is the engine's job
		FilterSubject: spec.Topic,
	}
	switch spec.Kind {
	case bridge.Event:
		// A group gets the events published after it first subscribed, as
		// with a queue bound to an exchange; the durable then keeps its place.
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	case bridge.Reply:
		cfg.MemoryStorage = true
	}
	return cfg
}

// provision makes sure spec's stream and consumer exist and returns the
// consumer and its stream.
func (b *natsBridge) provision(ctx context.Context, spec bridge.Spec) (jetstream.Consumer, string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, adminTimeout)
		defer cancel()
	}
	stream, err := b.ensureStream(ctx, spec.Topic, spec.Kind == bridge.Reply)
	if err != nil {
		return nil, "", err
	}
	cfg := b.consumerConfig(spec)
	cons, err := b.js.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, "", b.adminErr(fmt.Sprintf("create consumer %s (%s group %q) on stream %s", cfg.Durable, spec.Kind, spec.Group, stream), err)
	}
	return cons, stream, nil
}

// forget forgets s; when s was the last reply subscriber of a reply stream
// this backend named, the stream is deleted.
func (b *natsBridge) forget(s *subscriber) {
	b.mu.Lock()
	if _, ok := b.subs[s]; !ok {
		b.mu.Unlock()
		return
	}
	delete(b.subs, s)
	del := false
	if s.spec.Kind == bridge.Reply {
		b.replyRefs[s.stream]--
		if b.replyRefs[s.stream] <= 0 {
			delete(b.replyRefs, s.stream)
			delete(b.streams, s.spec.Topic)
			del = s.stream == streamName(b.opts.streamPrefix, s.spec.Topic)
		}
	}
	b.mu.Unlock()
	if !del {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	if err := b.js.DeleteStream(ctx, s.stream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		b.log.Warn("nats: deleting reply stream", "stream", s.stream, "err", err)
	}
}
