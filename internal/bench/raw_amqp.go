package main

import (
	"context"
	"errors"

	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

// amqpTransport is watermill-amqp as the cqrs example wires it: commands on
// NewDurableQueueConfig (a durable queue per command topic, one subscriber
// shared by the command handlers), events on NewDurablePubSubConfig (a
// fanout exchange per topic, a durable queue per handler named
// GenerateQueueNameTopicNameWithSuffix(handler)), every other setting at its
// default — notably Publish.ChannelPoolSize 0, which opens and closes a
// channel per publish, and no publisher confirms.
//
// The tuned variants (not the documented setup) give the publishers a pool
// of channels and the subscribers a prefetch of 100, with or without
// publisher confirms (amqpTuning).
//
// Replies: a queue per request (NewNonDurableQueueConfig with AutoDelete,
// so RabbitMQ removes it when the request stops listening, and x-expires
// for the ones it does not), declared by
// the per-request Subscribe before the command is sent; the reply is
// published to it through the default exchange by the commands publisher.
func amqpTransport(uri, prefix string, tn amqpTuning) func(context.Context, string) (*transport, error) {
	return func(_ context.Context, ns string) (_ *transport, err error) {
		base := prefix + ns
		var closers []func() error
		closeAll := func() error {
			var errs []error
			for _, c := range closers {
				errs = append(errs, c())
			}
			amqpCleanup(uri, base)
			return errors.Join(errs...)
		}
		defer func() {
			if err != nil {
				err = errors.Join(err, closeAll())
			}
		}()
		cmdCfg, evtCfg := tn.apply(wamqp.NewDurableQueueConfig(uri)), tn.apply(wamqp.NewDurablePubSubConfig(uri, nil))
		cmdPub, err := wamqp.NewPublisher(cmdCfg, wlog)
		if err != nil {
			return nil, err
		}
		closers = append(closers, cmdPub.Close)
		evtPub, err := wamqp.NewPublisher(evtCfg, wlog)
		if err != nil {
			return nil, err
		}
		closers = append(closers, evtPub.Close)
		cmdSub, err := wamqp.NewSubscriber(cmdCfg, wlog)
		if err != nil {
			return nil, err
		}
		replyCfg := wamqp.NewNonDurableQueueConfig(uri)
		replyCfg.Queue.AutoDelete = true
		// AutoDelete alone leaves a queue behind whenever the request's
		// context ends before watermill-amqp's consumer started (its
		// reconnect loop picks ctx.Done or connected at random); let
		// RabbitMQ remove those after a minute unused.
		replyCfg.Queue.Arguments = amqp091.Table{"x-expires": int32(60000)}
		replySub, err := wamqp.NewSubscriber(replyCfg, wlog)
		if err != nil {
			return nil, errors.Join(err, cmdSub.Close())
		}
		closers = append(closers, replySub.Close)
		// The router closes cmdSub once per handler that uses it; close it
		// here too, for a rig without commands.
		closers = append(closers, cmdSub.Close)
		return &transport{
			cmdPub: cmdPub, evtPub: evtPub, replyPub: cmdPub,
			cmdSub: func(string) (message.Subscriber, error) { return cmdSub, nil },
			evtSub: func(g string) (message.Subscriber, error) {
				return wamqp.NewSubscriber(tn.apply(wamqp.NewDurablePubSubConfig(uri, wamqp.GenerateQueueNameTopicNameWithSuffix(g))), wlog)
			},
			replySub:   replySub,
			topic:      func(name string) string { return base + "." + name },
			replyTopic: func(opID string) string { return base + ".reply." + opID },
			durable:    true,
			close:      closeAll,
		}, nil
	}
}

// amqpTuning is how a raw Watermill AMQP setup departs from the defaults.
type amqpTuning struct {
	// channelPool is Publish.ChannelPoolSize: 0 opens and closes a channel
	// per publish.
	channelPool int
	// prefetch is Consume.Qos.PrefetchCount of the subscribers (the
	// default configs set 1).
	prefetch int
	// confirm is Publish.ConfirmDelivery: wait for the broker's confirm of
	// every message, as Switchboard's publisher does.
	confirm bool
}

var (
	amqpDefaults = amqpTuning{prefetch: 1}
	// amqpTuned: a channel per publisher of the figure (Publishers), and
	// 100 messages on the wire per consumer.
	amqpTuned        = amqpTuning{channelPool: Publishers, prefetch: 100}
	amqpTunedConfirm = amqpTuning{channelPool: Publishers, prefetch: 100, confirm: true}
)

func (tn amqpTuning) apply(c wamqp.Config) wamqp.Config {
	c.Publish.ChannelPoolSize = tn.channelPool
	c.Publish.ConfirmDelivery = tn.confirm
	c.Consume.Qos.PrefetchCount = tn.prefetch
	return c
}

// amqpCleanup deletes, best effort, what raw Watermill declared for the
// namespace base: the command queues, the event exchange and its group
// queues (reply queues delete themselves).
func amqpCleanup(uri, base string) {
	conn, err := amqp091.Dial(uri)
	if err != nil {
		return
	}
	defer conn.Close()
	ev := base + "." + cqrs.StructName(&ItemEvent{})
	queues := []string{base + "." + cqrs.StructName(&EchoCmd{}), base + "." + cqrs.StructName(&FrontCmd{}), ev + "_svc_a", ev + "_svc_b"}
	for _, q := range queues {
		if ch, err := conn.Channel(); err == nil {
			if _, err := ch.QueueDelete(q, false, false, false); err == nil {
				_ = ch.Close()
			}
		}
	}
	if ch, err := conn.Channel(); err == nil {
		if err := ch.ExchangeDelete(ev, false, false); err == nil {
			_ = ch.Close()
		}
	}
}
