package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/components/requestreply"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
)

// transport is what raw Watermill needs from one backend, configured the way
// that backend's documentation shows (see each raw_*.go file).
type transport struct {
	// cmdPub publishes commands and replies, evtPub events.
	cmdPub, evtPub, replyPub message.Publisher
	// cmdSub and evtSub return the subscriber of one consumer group (the
	// cqrs handler name).
	cmdSub, evtSub func(group string) (message.Subscriber, error)
	// replySub is shared: requestreply subscribes once per request on it.
	replySub message.Subscriber
	// topic names a command or event topic; replyTopic the reply topic of
	// one request (one per operation id, so a reply reaches only its caller).
	topic      func(name string) string
	replyTopic func(opID string) string
	// durable: the backend keeps messages for a group whose consumers are away.
	durable bool
	close   func() error
}

// rawSide is hand-written Watermill: cqrs command and event buses and
// processors on a message.Router with the Recoverer middleware (as the cqrs
// example), JSON marshaling, and requestreply over the command bus.
type rawSide struct {
	open func(ctx context.Context, ns string) (*transport, error)
	// outboxRig builds the outbox workloads relaying to target (nil
	// without PostgreSQL).
	outboxRig func(ctx context.Context, ns string, target *transport, deliver func(id string)) (*outboxRig, error)
	// scheduleRig builds the schedule workloads (nil without PostgreSQL).
	scheduleRig func(ctx context.Context, ns string, deliver func(id string)) (*scheduleRig, error)
}

var wlog = watermill.NopLogger{}

var marshaler = cqrs.JSONMarshaler{GenerateName: cqrs.StructName}

// running is a router and what must be closed with it.
type running struct {
	router *message.Router
	tr     *transport
}

func (r running) close() error {
	var errs []error
	if r.router != nil {
		errs = append(errs, r.router.Close())
	}
	return errors.Join(append(errs, r.tr.close())...)
}

func newRouter() (*message.Router, error) {
	router, err := message.NewRouter(message.RouterConfig{}, wlog)
	if err != nil {
		return nil, err
	}
	router.AddMiddleware(middleware.Recoverer)
	return router, nil
}

func run(ctx context.Context, router *message.Router) error {
	errc := make(chan error, 1)
	go func() { errc <- router.Run(context.WithoutCancel(ctx)) }()
	select {
	case <-router.Running():
		return nil
	case err := <-errc:
		return fmt.Errorf("router: %w", err)
	}
}

func (r rawSide) commands(ctx context.Context, ns string, hops int) (_ *rig, err error) {
	tr, err := r.open(ctx, ns)
	if err != nil {
		return nil, err
	}
	rn := running{tr: tr}
	defer func() {
		if err != nil {
			err = errors.Join(err, rn.close())
		}
	}()
	if rn.router, err = newRouter(); err != nil {
		return nil, err
	}
	bus, err := cqrs.NewCommandBusWithConfig(tr.cmdPub, cqrs.CommandBusConfig{
		GeneratePublishTopic: func(p cqrs.CommandBusGeneratePublishTopicParams) (string, error) {
			return tr.topic(p.CommandName), nil
		},
		Marshaler: marshaler,
		Logger:    wlog,
	})
	if err != nil {
		return nil, err
	}
	proc, err := cqrs.NewCommandProcessorWithConfig(rn.router, cqrs.CommandProcessorConfig{
		GenerateSubscribeTopic: func(p cqrs.CommandProcessorGenerateSubscribeTopicParams) (string, error) {
			return tr.topic(p.CommandName), nil
		},
		SubscriberConstructor: func(p cqrs.CommandProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			return tr.cmdSub(p.HandlerName)
		},
		Marshaler: marshaler,
		Logger:    wlog,
	})
	if err != nil {
		return nil, err
	}
	backend, err := requestreply.NewPubSubBackend[Item](requestreply.PubSubBackendConfig{
		Publisher: tr.replyPub,
		SubscriberConstructor: func(requestreply.PubSubBackendSubscribeParams) (message.Subscriber, error) {
			return tr.replySub, nil
		},
		GenerateSubscribeTopic: func(p requestreply.PubSubBackendSubscribeParams) (string, error) {
			return tr.replyTopic(string(p.OperationID)), nil
		},
		GeneratePublishTopic: func(p requestreply.PubSubBackendPublishParams) (string, error) {
			return tr.replyTopic(string(p.OperationID)), nil
		},
		Logger: wlog,
	}, requestreply.BackendPubsubJSONMarshaler[Item]{})
	if err != nil {
		return nil, err
	}
	handlers := []cqrs.CommandHandler{
		requestreply.NewCommandHandlerWithResult("echo", backend, func(_ context.Context, c *EchoCmd) (Item, error) {
			return Item(*c), nil
		}),
	}
	if hops == 2 {
		handlers = append(handlers, requestreply.NewCommandHandlerWithResult("front", backend, func(ctx context.Context, c *FrontCmd) (Item, error) {
			return sendWithReply(ctx, bus, backend, (*EchoCmd)(c))
		}))
	}
	if err := proc.AddHandlers(handlers...); err != nil {
		return nil, err
	}
	if err := run(ctx, rn.router); err != nil {
		return nil, err
	}
	return &rig{
		op: func(ctx context.Context, seq int64) error {
			in := newItem(seq)
			var cmd any = (*EchoCmd)(&in)
			if hops == 2 {
				cmd = (*FrontCmd)(&in)
			}
			out, err := sendWithReply(ctx, bus, backend, cmd)
			if err == nil && out.ID != in.ID {
				err = fmt.Errorf("reply %s to call %s", out.ID, in.ID)
			}
			return err
		},
		close: rn.close,
	}, nil
}

func sendWithReply(ctx context.Context, bus *cqrs.CommandBus, backend *requestreply.PubSubBackend[Item], cmd any) (Item, error) {
	reply, err := requestreply.SendWithReply[Item](ctx, bus, backend, cmd)
	if err != nil {
		return Item{}, err
	}
	return reply.HandlerResult, reply.Error
}

func (r rawSide) eventBus(tr *transport) (*cqrs.EventBus, error) {
	return cqrs.NewEventBusWithConfig(tr.evtPub, cqrs.EventBusConfig{
		GeneratePublishTopic: func(p cqrs.GenerateEventPublishTopicParams) (string, error) {
			return tr.topic(p.EventName), nil
		},
		Marshaler: marshaler,
		Logger:    wlog,
	})
}

// consumers adds the handlers of groups subscribing services (at most
// two), one consumer group each (the handler name), to router.
func (r rawSide) consumers(router *message.Router, tr *transport, groups int, deliver func(int, string)) error {
	proc, err := cqrs.NewEventProcessorWithConfig(router, cqrs.EventProcessorConfig{
		GenerateSubscribeTopic: func(p cqrs.EventProcessorGenerateSubscribeTopicParams) (string, error) {
			return tr.topic(p.EventName), nil
		},
		SubscriberConstructor: func(p cqrs.EventProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			return tr.evtSub(p.HandlerName)
		},
		Marshaler: marshaler,
		Logger:    wlog,
	})
	if err != nil {
		return err
	}
	var handlers []cqrs.EventHandler
	for i, name := range []string{"svc_a", "svc_b"}[:groups] {
		handlers = append(handlers, cqrs.NewEventHandler(name, func(_ context.Context, e *ItemEvent) error {
			deliver(i, e.ID)
			return nil
		}))
	}
	return proc.AddHandlers(handlers...)
}

func (r rawSide) events(ctx context.Context, ns string, groups int, deliver func(int, string)) (_ *rig, err error) {
	tr, err := r.open(ctx, ns)
	if err != nil {
		return nil, err
	}
	rn := running{tr: tr}
	defer func() {
		if err != nil {
			err = errors.Join(err, rn.close())
		}
	}()
	if rn.router, err = newRouter(); err != nil {
		return nil, err
	}
	bus, err := r.eventBus(tr)
	if err != nil {
		return nil, err
	}
	if err := r.consumers(rn.router, tr, groups, deliver); err != nil {
		return nil, err
	}
	if err := run(ctx, rn.router); err != nil {
		return nil, err
	}
	return &rig{
		op: func(ctx context.Context, seq int64) error {
			ev := ItemEvent(newItem(seq))
			return bus.Publish(ctx, &ev)
		},
		close: rn.close,
	}, nil
}

func (r rawSide) publisher(ctx context.Context, ns string) (_ *rig, err error) {
	tr, err := r.open(ctx, ns)
	if err != nil {
		return nil, err
	}
	rn := running{tr: tr}
	defer func() {
		if err != nil {
			err = errors.Join(err, rn.close())
		}
	}()
	if tr.durable {
		// Subscribe both groups once, so that the broker keeps every event
		// for them, then stop consuming.
		router, err := newRouter()
		if err != nil {
			return nil, err
		}
		if err := r.consumers(router, tr, 2, func(int, string) {}); err != nil {
			return nil, err
		}
		if err := run(ctx, router); err != nil {
			return nil, err
		}
		if err := router.Close(); err != nil {
			return nil, err
		}
	}
	bus, err := r.eventBus(tr)
	if err != nil {
		return nil, err
	}
	return &rig{
		op: func(ctx context.Context, seq int64) error {
			ev := ItemEvent(newItem(seq))
			return bus.Publish(ctx, &ev)
		},
		close: rn.close,
	}, nil
}

func (r rawSide) outbox(ctx context.Context, ns string, local bool, deliver func(string)) (*outboxRig, error) {
	if r.outboxRig == nil {
		return nil, errSkip
	}
	open := r.open
	if local {
		open = gochannelTransport
	}
	tr, err := open(ctx, ns)
	if err != nil {
		return nil, err
	}
	return r.outboxRig(ctx, ns, tr, deliver)
}
