package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	_ "github.com/switchboard-go/switchboard/bridge/all" // every backend
	"github.com/switchboard-go/switchboard/engine"
)

// sbSide is Switchboard as its README shows it: engine.Config{Bridge: url},
// services with NewService/Handle/Subscribe, Invoke and Emit, every other
// setting at its default.
type sbSide struct {
	url string
	// durable: the backend keeps messages for a group whose consumers are
	// away, so publisher creates the groups first.
	durable bool
	// pgURL is the plain PostgreSQL URL, for the outbox workloads (empty
	// on the in-process backend and when PostgreSQL is unreachable).
	pgURL string
}

var quiet = slog.New(slog.DiscardHandler)

func (s sbSide) start(ctx context.Context, services ...*engine.Service) (*engine.Engine, error) {
	e, err := engine.New(engine.Config{Bridge: s.url, Logger: quiet})
	if err != nil {
		return nil, err
	}
	if err := e.Register(services...); err != nil {
		return nil, errors.Join(err, e.Stop(ctx))
	}
	if err := e.Start(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

func stopper(e *engine.Engine) func() error {
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return e.Stop(ctx)
	}
}

func (s sbSide) commands(ctx context.Context, ns string, hops int) (*rig, error) {
	echoSvc := engine.NewService(ns+"-echo", "1")
	echo := engine.NewCommand[Item, Item](ns+"-echo", "1", "echo")
	engine.Handle(echoSvc, echo, func(_ context.Context, in Item) (Item, error) { return in, nil })
	services, target := []*engine.Service{echoSvc}, echo
	if hops == 2 {
		frontSvc := engine.NewService(ns+"-front", "1")
		front := engine.NewCommand[Item, Item](ns+"-front", "1", "front")
		engine.Handle(frontSvc, front, func(ctx context.Context, in Item) (Item, error) {
			return echo.Invoke(ctx, in)
		})
		services, target = append(services, frontSvc), front
	}
	e, err := s.start(ctx, services...)
	if err != nil {
		return nil, err
	}
	return &rig{
		op: func(ctx context.Context, seq int64) error {
			in := newItem(seq)
			out, err := target.Invoke(engine.WithEngine(ctx, e), in)
			if err == nil && out.ID != in.ID {
				err = fmt.Errorf("reply %s to call %s", out.ID, in.ID)
			}
			return err
		},
		close: stopper(e),
	}, nil
}

// subscribers returns groups subscribing services of ev (at most two).
func subscribers(ns string, ev *engine.Event[Item], groups int, deliver func(int, string)) []*engine.Service {
	var out []*engine.Service
	for i, name := range []string{"a", "b"}[:groups] {
		svc := engine.NewService(ns+"-"+name, "1")
		engine.Subscribe(svc, ev, func(_ context.Context, it Item) error {
			deliver(i, it.ID)
			return nil
		})
		out = append(out, svc)
	}
	return out
}

func (s sbSide) events(ctx context.Context, ns string, groups int, deliver func(int, string)) (*rig, error) {
	ev := engine.NewEvent[Item](ns + ".item")
	e, err := s.start(ctx, subscribers(ns, ev, groups, deliver)...)
	if err != nil {
		return nil, err
	}
	return &rig{
		op:    func(ctx context.Context, seq int64) error { return ev.Emit(engine.WithEngine(ctx, e), newItem(seq)) },
		close: stopper(e),
	}, nil
}

func (s sbSide) publisher(ctx context.Context, ns string) (*rig, error) {
	ev := engine.NewEvent[Item](ns + ".item")
	if s.durable {
		e, err := s.start(ctx, subscribers(ns, ev, 2, func(int, string) {})...)
		if err != nil {
			return nil, err
		}
		if err := stopper(e)(); err != nil {
			return nil, err
		}
	}
	e, err := s.start(ctx)
	if err != nil {
		return nil, err
	}
	return &rig{
		op:    func(ctx context.Context, seq int64) error { return ev.Emit(engine.WithEngine(ctx, e), newItem(seq)) },
		close: stopper(e),
	}, nil
}

func (s sbSide) outbox(ctx context.Context, ns string, local bool, deliver func(string)) (*outboxRig, error) {
	if s.pgURL == "" {
		return nil, errSkip
	}
	url := s.url
	if local {
		url = "gochannel://" + ns
	}
	return sbOutbox(ctx, s.pgURL, url, ns, deliver)
}
