package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
)

// subscriber is one member of a consumer group. Close ends its subscriptions
// but never the bridge.
type subscriber struct {
	b    *Bridge
	spec bridge.Spec
	ref  *groupRef

	mu        sync.Mutex
	closed    bool
	closing   chan struct{}
	wg        sync.WaitGroup // running subscriptions
	closeOnce sync.Once
}

// Subscribe starts delivering the group's messages, up to spec.Concurrency in
// flight at once. The channel closes when the subscriber is closed, ctx is
// done or the bridge closes, once every in-flight message has been acked or
// nacked (or its ack deadline has passed).
func (s *subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if topic != s.spec.Topic {
		return nil, fmt.Errorf("postgres: subscriber for topic %q asked to subscribe to %q", s.spec.Topic, topic)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("postgres: subscriber closed: %w", bridge.ErrClosed)
	}
	sub := &subscription{
		b:       s.b,
		ref:     s.ref,
		topic:   topic,
		ctx:     ctx,
		workers: s.spec.Concurrency,
		out:     make(chan *message.Message),
		wake:    make(chan struct{}, 1),
		done:    make(chan *claimed, s.spec.Concurrency),
		stop:    make(chan struct{}),
		ended:   make(chan struct{}),
	}
	if !s.b.addSub(sub) {
		return nil, bridge.ErrClosed
	}
	s.wg.Add(1)
	go func() {
		select {
		case <-ctx.Done():
		case <-s.closing:
		case <-s.b.ctx.Done():
		case <-sub.ended:
			return
		}
		close(sub.stop)
	}()
	go func() {
		defer s.wg.Done()
		defer s.b.subsWG.Done()
		defer close(sub.ended)
		sub.run()
	}()
	return sub.out, nil
}

// Close stops delivering new messages, waits until every in-flight message
// of this subscriber has been acked or nacked (at most the ack deadline), and
// leaves the group. The last member of a reply group deletes the group.
// The bridge and its publisher stay open.
func (s *subscriber) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.closing)
		s.mu.Unlock()
		s.wg.Wait()
		s.b.leave(s.ref)
	})
	return nil
}

// subscription is one Subscribe call: a claim loop plus one goroutine per
// message in flight.
type subscription struct {
	b       *Bridge
	ref     *groupRef
	topic   string
	ctx     context.Context // Subscribe's, set on every delivered message
	workers int

	out   chan *message.Message
	wake  chan struct{} // 1-buffered: "there may be new rows"
	done  chan *claimed // one send per finished delivery: the row if acked (the run loop deletes it), else nil
	stop  chan struct{} // closed when the subscription must stop
	ended chan struct{} // closed when run has returned
}

func (s *subscription) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// claimed is one leased row.
type claimed struct {
	id       int64
	attempts int32
	msg      *message.Message
	expires  time.Time // local time by which the lease has surely ended
}

// run claims rows while there is room and work, and sleeps otherwise until a
// NOTIFY (via the bridge's listener), a finished delivery, the moment the
// group's next row becomes visible, or the poll interval. The acks of
// finished deliveries are deleted by the next claim's statement, or by one
// statement for all of them when no claim is due.
func (s *subscription) run() {
	defer close(s.out)
	defer s.b.removeSub(s)

	var acks []claimed // acked rows not yet deleted
	free := s.workers
	dirty := true      // there may be claimable rows
	saturated := false // the last claim was cut short by free slots
	errDelay := time.Duration(0)
	failing := false
	timer := time.NewTimer(s.b.cfg.pollInterval)
	defer timer.Stop()
	// reset arms the timer for d from now, at most the poll interval (error
	// backoff excepted) and at least 5 ms (a row that is visible but was
	// skipped as locked is being claimed by someone else right now).
	reset := func(d time.Duration, capped bool) {
		if capped {
			d = min(d, s.b.cfg.pollInterval)
		}
		timer.Stop()
		timer.Reset(max(d, 5*time.Millisecond))
	}

	// finished counts one delivery; an acked row is queued for deletion.
	finished := func(c *claimed) {
		free++
		if c != nil {
			acks = append(acks, *c)
		}
	}

	for {
		switch {
		case dirty && free > 0:
			dirty = false
			rows, next, err := s.claim(free, ackIDs(acks))
			if err == nil {
				acks = acks[:0]
			} else {
				acks = s.unexpired(acks, err)
			}
			switch {
			case err != nil:
				if s.stopping() {
					break
				}
				errDelay = min(max(2*errDelay, 100*time.Millisecond), 2*time.Second)
				if !failing {
					s.b.log.Warn("claiming messages failed; retrying", "topic", s.topic, "group", s.ref.key.name, "err", err)
					failing = true
				}
				reset(errDelay, false)
			default:
				if failing {
					s.b.log.Info("claiming messages works again", "topic", s.topic, "group", s.ref.key.name)
					failing = false
				}
				errDelay = 0
				saturated = len(rows) == free
				for _, r := range rows {
					free--
					go s.deliver(r)
				}
				if !saturated {
					reset(next, true)
				}
			}
		case len(acks) > 0:
			if err := s.ack(s.b.ctx, acks); err != nil {
				acks = s.unexpired(acks, err)
				if !s.stopping() {
					errDelay = min(max(2*errDelay, 100*time.Millisecond), 2*time.Second)
					reset(errDelay, false)
				}
			} else {
				acks = acks[:0]
			}
		}
		select {
		case <-s.stop:
			for free < s.workers {
				finished(<-s.done)
			}
			s.flushAcks(acks)
			return
		case <-s.wake:
			dirty = true
		case <-timer.C:
			dirty = true
		case c := <-s.done:
			finished(c)
			// Take every other finished delivery too: one statement then
			// deletes all their acks and claims as many rows.
		more:
			for {
				select {
				case c := <-s.done:
					finished(c)
				default:
					break more
				}
			}
			if saturated {
				dirty = true
			}
		}
	}
}

func ackIDs(acks []claimed) []int64 {
	ids := make([]int64, len(acks)) // never nil: a NULL array would match nothing
	for i, c := range acks {
		ids[i] = c.id
	}
	return ids
}

// ack deletes the acked rows in one statement.
func (s *subscription) ack(ctx context.Context, acks []claimed) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	_, err := s.b.pool.Exec(ctx, s.b.q.ack, ackIDs(acks))
	return err
}

// unexpired returns the acks whose deletion failed with err and is still
// worth retrying: the rows whose lease has not ended. The others are visible
// again and will be delivered again.
func (s *subscription) unexpired(acks []claimed, err error) []claimed {
	now := time.Now()
	keep := acks[:0]
	for _, c := range acks {
		if now.Before(c.expires) {
			keep = append(keep, c)
			continue
		}
		s.b.log.Warn("ack failed; the message will be delivered again", "topic", s.topic, "uuid", c.msg.UUID, "err", err)
	}
	return keep
}

// flushAcks deletes the acks left when the subscription stops, retrying
// transient failures until it succeeds, every lease has ended anyway, or the
// bridge closes. The first attempt runs even while the bridge is closing.
func (s *subscription) flushAcks(acks []claimed) {
	delay := 50 * time.Millisecond
	for len(acks) > 0 {
		err := s.ack(context.Background(), acks)
		if err == nil {
			return
		}
		if s.b.ctx.Err() != nil {
			for _, c := range acks {
				s.b.log.Warn("ack failed; the message will be delivered again", "topic", s.topic, "uuid", c.msg.UUID, "err", err)
			}
			return
		}
		if acks = s.unexpired(acks, err); len(acks) == 0 {
			return
		}
		select {
		case <-time.After(delay):
		case <-s.b.ctx.Done():
		}
		delay = min(2*delay, 2*time.Second)
	}
}

func (s *subscription) stopping() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// claim leases up to n visible rows of the group in one statement, and
// says how long until the group's next row can be claimed (the poll
// interval when none).
func (s *subscription) claim(n int, acked []int64) ([]claimed, time.Duration, error) {
	ctx, cancel := context.WithTimeout(s.b.ctx, opTimeout)
	defer cancel()
	// The lease is measured from before the statement is sent, so the local
	// deadline never falls after the one stored in the row.
	expires := time.Now().Add(s.b.cfg.ackDeadline)
	rows, err := s.b.pool.Query(ctx, s.b.q.claim, s.ref.id.Load(), n, s.b.cfg.ackDeadline.Microseconds(), acked)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var (
		out  []claimed
		next = s.b.cfg.pollInterval
	)
	for rows.Next() {
		var (
			id            *int64
			uuid          *string
			payload, meta []byte
			attempts      *int32
			secs          *float64
		)
		if err := rows.Scan(&id, &uuid, &payload, &meta, &attempts, &secs); err != nil {
			// The row is leased; it comes back after the ack deadline.
			s.b.log.Error("skipping unreadable message row", "topic", s.topic, "err", err)
			continue
		}
		if secs != nil {
			next = time.Duration(*secs * float64(time.Second))
		}
		if id == nil {
			continue // nothing claimed: the row only carries secs
		}
		m, err := decodeMessage(*uuid, payload, meta)
		if err != nil {
			s.b.log.Error("skipping unreadable message row", "topic", s.topic, "err", err)
			continue
		}
		out = append(out, claimed{id: *id, attempts: *attempts, msg: m, expires: expires})
	}
	if err := rows.Err(); err != nil {
		// The statement failed, so its transaction rolled back and nothing
		// was leased: drop what was read, another claim will return it.
		return nil, 0, err
	}
	slices.SortFunc(out, func(a, b claimed) int { return cmp.Compare(a.id, b.id) })
	return out, next, nil
}

// deliver hands one claimed message to the consumer and settles it: a
// nack here, an ack by handing the row back to the run loop.
func (s *subscription) deliver(c claimed) {
	var acked *claimed
	defer func() { s.done <- acked }()
	m := c.msg
	m.SetContext(s.ctx)
	m.Metadata.Set(bridge.DeliveryKey, strconv.Itoa(int(c.attempts)))
	lease := time.NewTimer(time.Until(c.expires))
	defer lease.Stop()
	select {
	case s.out <- m:
	case <-s.stop:
		s.release(c)
		return
	case <-lease.C:
		// Nobody took it before its lease ended: it is visible again and
		// may already be with another member, so it must not be handed out.
		return
	}
	select {
	case <-m.Acked():
		// Deleted by run's next statement, with the other acks and claims.
		acked = &c
	case <-m.Nacked():
		delay := bridge.NackDelay(m.Metadata)
		s.settle(c, "nack", func(ctx context.Context) error {
			_, err := s.b.pool.Exec(ctx, s.b.q.nack, c.id, c.attempts, delay.Microseconds())
			return err
		})
		// Wake this subscription when the message is due again; members in
		// other processes find it through their next-visible timer.
		time.AfterFunc(delay, s.signal)
	case <-lease.C:
		// The row is visible again: whoever claims it next gets it. A late
		// Ack or Nack of this delivery changes nothing.
		s.b.log.Warn("message not acked within the ack deadline; it will be delivered again",
			"topic", s.topic, "group", s.ref.key.name, "uuid", m.UUID, "ack_deadline", s.b.cfg.ackDeadline)
	case <-s.b.ctx.Done():
		// Bridge closing: the handler may still be running, so the message
		// must not be released; it comes back after the ack deadline.
	}
}

// settle runs an ack or nack statement, retrying transient failures until
// it succeeds, the lease has ended anyway, or the bridge closes. The first
// attempt runs even while the bridge is closing.
func (s *subscription) settle(c claimed, what string, f func(context.Context) error) {
	delay := 50 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		err := f(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(c.expires) || s.b.ctx.Err() != nil {
			s.b.log.Warn(what+" failed; the message will be delivered again", "topic", s.topic, "uuid", c.msg.UUID, "err", err)
			return
		}
		s.b.log.Debug(what+" failed; retrying", "topic", s.topic, "uuid", c.msg.UUID, "err", err)
		select {
		case <-time.After(delay):
		case <-s.b.ctx.Done():
		}
		delay = min(2*delay, 2*time.Second)
	}
}

// release puts back a row that was claimed but never handed to a consumer.
func (s *subscription) release(c claimed) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := s.b.pool.Exec(ctx, s.b.q.release, c.id, c.attempts); err != nil && !errors.Is(err, context.Canceled) {
		s.b.log.Debug("releasing undelivered message failed; it comes back after the ack deadline", "uuid", c.msg.UUID, "err", err)
	}
	// Another member (or a later subscription of this bridge) may want it now.
	s.b.wakeTopic(s.topic)
}
