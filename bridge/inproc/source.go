package inproc

import (
	"context"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/internal/consume"
)

// source is one Subscribe call's member of a group: the consume.Source of
// the in-process bus. A delivery's Ref is its queued entry.
type source struct {
	b    *Bus
	spec bridge.Spec
	g    *group
}

// Fetch takes up to n queued messages, waiting for the first one until ctx
// ends or the bus closes.
func (s *source) Fetch(ctx context.Context, n int, deliver func(consume.Delivery)) error {
	for {
		if ms := s.g.fetch(n); len(ms) > 0 {
			for _, m := range ms {
				m.deliveries++
				// Ref is the snapshot, a pointer (boxing a queued would
				// allocate on every delivery); Count is its deliveries.
				deliver(consume.Delivery{Msg: m.msg.Copy(), Count: m.deliveries, Ref: m.msg})
			}
			return nil
		}
		select {
		case <-s.g.signals:
		case <-ctx.Done():
			return nil
		case <-s.b.done: // the bus abandons this subscription now
			return nil
		}
	}
}

// Ack counts the messages settled: a delivered message has left the queue.
func (s *source) Ack(_ context.Context, ds []consume.Delivery) error {
	s.g.settled(len(ds))
	return nil
}

// Nack queues the message again for the group after delay.
func (s *source) Nack(_ context.Context, d consume.Delivery, delay time.Duration) error {
	s.g.requeue(queued{msg: d.Ref.(*message.Message), deliveries: d.Count}, delay)
	s.g.settled(1)
	return nil
}

// Release queues messages no handler received again, uncounted.
func (s *source) Release(_ context.Context, ds []consume.Delivery) error {
	ms := make([]queued, len(ds))
	for i, d := range ds {
		ms[i] = queued{msg: d.Ref.(*message.Message), deliveries: d.Count - 1}
	}
	s.g.pushFront(ms) // back in their place, ahead of later messages
	s.g.settled(len(ds))
	return nil
}

// Close leaves the group.
func (s *source) Close() error {
	s.b.leave(s.spec, s.g)
	return nil
}
