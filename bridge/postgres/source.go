package postgres

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/internal/consume"
)

// source is one Subscribe call of a group member (a consume.Source): it
// claims the group's rows, and settles them by their lease token (the row's
// attempts as the claim left them).
type source struct {
	b     *Bridge
	ref   *groupRef
	topic string
	log   *slog.Logger

	wake chan struct{} // 1-buffered: "there may be rows to claim"

	// Fetch's own state (the runtime calls Fetch from one goroutine).
	timer *time.Timer // the group's next visible row, or the poll interval
	eager bool        // claim without waiting: the last claim filled its n, or failed
}

// lease is one claimed row, the Ref of its consume.Delivery.
type lease struct {
	id       int64
	attempts int32 // as the claim left them: the lease token
	msg      *message.Message
	expires  atomic.Int64 // UnixNano by which the lease has surely ended: the delivery's Deadline; moved by Heartbeat
}

func (l *lease) deadline() time.Time { return time.Unix(0, l.expires.Load()) }

func (b *Bridge) newSource(ref *groupRef, spec bridge.Spec) (*source, error) {
	s := &source{
		b: b, ref: ref, topic: spec.Topic,
		log:   b.log.With("topic", spec.Topic, "group", spec.Group),
		wake:  make(chan struct{}, 1),
		timer: time.NewTimer(b.cfg.pollInterval),
		eager: true,
	}
	if !b.addSource(s) {
		s.timer.Stop()
		return nil, bridge.ErrClosed
	}
	return s, nil
}

func (s *source) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Fetch claims up to n of the group's visible rows in one statement, after
// waiting, unless the last claim filled its n or failed, for a NOTIFY of
// the topic (via the bridge's listener), the moment the group's next row
// becomes visible (a nacked message, a lease running out), the poll
// interval, or the end of ctx.
func (s *source) Fetch(ctx context.Context, n int, deliver func(consume.Delivery)) error {
	if s.b.ctx.Err() != nil {
		<-ctx.Done() // the bridge is closing and closes the runtime next
		return nil
	}
	if !s.eager {
		select {
		case <-s.wake:
		case <-s.timer.C:
		case <-ctx.Done():
			return nil
		}
	}
	s.eager = true // until the claim says otherwise
	ls, next, err := s.claim(n)
	if err != nil {
		if s.b.ctx.Err() != nil {
			return nil
		}
		return err
	}
	if len(ls) < n {
		// A row that is visible but was skipped as locked is being claimed
		// by someone else right now: look again in 5 ms at the earliest.
		s.eager = false
		s.timer.Reset(max(min(next, s.b.cfg.pollInterval), 5*time.Millisecond))
	}
	for _, l := range ls {
		// Past the lease the runtime frees the slot without a verdict: the
		// row is visible again and goes to whoever claims it next.
		deliver(consume.Delivery{Msg: l.msg, Count: int(l.attempts), Ref: l, Deadline: l.deadline()})
	}
	return nil
}

// claim leases up to n visible rows of the group in one statement, and says
// how long until the group's next row can be claimed (the poll interval
// when none). The statement is not ended by the subscription stopping:
// rows it leased with no one to read them would wait out their lease.
func (s *source) claim(n int) ([]*lease, time.Duration, error) {
	ctx, cancel := context.WithTimeout(s.b.ctx, opTimeout)
	defer cancel()
	// The lease is measured from before the statement is sent, so the local
	// deadline never falls after the one stored in the row.
	expires := time.Now().Add(s.b.cfg.ackDeadline)
	rows, err := s.b.pool.Query(ctx, s.b.q.claim, s.ref.id.Load(), n, s.b.cfg.ackDeadline.Microseconds())
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var (
		out  []*lease
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
			s.log.Error("skipping unreadable message row", "err", err)
			continue
		}
		if secs != nil {
			next = time.Duration(*secs * float64(time.Second))
		}
		if id == nil {
			continue // nothing claimed: the row only carries secs
		}
		m := decodeMessage(*uuid, payload, meta)
		l := &lease{id: *id, attempts: *attempts, msg: m}
		l.expires.Store(expires.UnixNano())
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		// The statement failed, so its transaction rolled back and nothing
		// was leased: drop what was read, another claim will return it.
		return nil, 0, err
	}
	slices.SortFunc(out, func(a, b *lease) int { return cmp.Compare(a.id, b.id) })
	return out, next, nil
}

// tokens returns the ids and lease tokens of ls, as the settling
// statements take them (never nil: a NULL array would match nothing).
func tokens(ls []*lease) (ids []int64, attempts []int32) {
	ids, attempts = make([]int64, len(ls)), make([]int32, len(ls))
	for i, l := range ls {
		ids[i], attempts[i] = l.id, l.attempts
	}
	return ids, attempts
}

// Ack deletes the acked rows in one statement; a row whose lease ended and
// was claimed again meanwhile is left to its new holder.
func (s *source) Ack(ctx context.Context, ds []consume.Delivery) error {
	ls := make([]*lease, len(ds))
	for i, d := range ds {
		ls[i] = d.Ref.(*lease)
	}
	return s.settle(ctx, ls, func(ctx context.Context, ls []*lease) error {
		ids, attempts := tokens(ls)
		_, err := s.b.pool.Exec(ctx, s.b.q.ack, ids, attempts)
		return err
	})
}

// Nack makes the row visible again after delay, unless its lease ended,
// and wakes this subscription then; members in other processes find it
// through their next-visible timer.
func (s *source) Nack(ctx context.Context, d consume.Delivery, delay time.Duration) error {
	l := d.Ref.(*lease)
	err := s.settle(ctx, []*lease{l}, func(ctx context.Context, ls []*lease) error {
		_, err := s.b.pool.Exec(ctx, s.b.q.nack, l.id, l.attempts, delay.Microseconds())
		return err
	})
	time.AfterFunc(delay, s.signal)
	return err
}

// settle runs an ack or nack statement for ls, retrying transient failures
// with backoff until it succeeds, every lease of ls has ended anyway (those
// rows are visible again), ctx ends or the bridge closes. The first attempt
// runs even while the bridge is closing.
func (s *source) settle(ctx context.Context, ls []*lease, exec func(context.Context, []*lease) error) error {
	delay := 50 * time.Millisecond
	for {
		sctx, cancel := context.WithTimeout(ctx, opTimeout)
		err := exec(sctx, ls)
		cancel()
		if err == nil {
			return nil
		}
		now := time.Now()
		ls = slices.DeleteFunc(slices.Clone(ls), func(l *lease) bool { return now.After(l.deadline()) })
		if len(ls) == 0 || !transient(err) {
			return err
		}
		s.log.Debug("settling messages failed; retrying", "n", len(ls), "err", err, "in", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		case <-s.b.ctx.Done():
			t.Stop()
			return err
		}
		delay = min(2*delay, 2*time.Second)
	}
}

// Heartbeat renews, in one statement, the leases of rows that wait for a
// handler or that handlers hold, so that neither a slow handler nor rows
// claimed ahead (prefetch) lose them, and returns their new deadlines; the
// zero time for a lease that was lost (ended and claimed again), and for
// all when the statement failed.
func (s *source) Heartbeat(ds []consume.Delivery) []time.Time {
	out := make([]time.Time, len(ds))
	ls := make([]*lease, len(ds))
	for i, d := range ds {
		ls[i] = d.Ref.(*lease)
	}
	ids, attempts := tokens(ls)
	ctx, cancel := context.WithTimeout(s.b.ctx, opTimeout)
	defer cancel()
	expires := time.Now().Add(s.b.cfg.ackDeadline) // measured before the statement, as at claim
	rows, err := s.b.pool.Query(ctx, s.b.q.extend, ids, attempts, s.b.cfg.ackDeadline.Microseconds())
	if err != nil {
		s.log.Debug("renewing leases failed", "n", len(ds), "err", err)
		return out
	}
	ids, err = pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		s.log.Debug("renewing leases failed", "n", len(ds), "err", err)
		return out
	}
	renewed := make(map[int64]bool, len(ids))
	for _, id := range ids {
		renewed[id] = true
	}
	for i, l := range ls {
		if renewed[l.id] {
			l.expires.Store(expires.UnixNano())
			out[i] = expires
		}
	}
	return out
}

// Release puts back rows that were claimed but never handed to a handler,
// as they were: visible at once, the claim not counted as a delivery.
func (s *source) Release(ctx context.Context, ds []consume.Delivery) error {
	ls := make([]*lease, len(ds))
	for i, d := range ds {
		ls[i] = d.Ref.(*lease)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ids, attempts := tokens(ls)
	_, err := s.b.pool.Exec(ctx, s.b.q.release, ids, attempts)
	// Another member (or a later subscription of this bridge) may want them now.
	s.b.wakeTopic(s.topic)
	return err
}

// Close stops the source's timer; rows it still holds (abandoned, see
// consume.Subscriber.Close) come back after their lease.
func (s *source) Close() error {
	s.b.removeSource(s)
	s.timer.Stop()
	return nil
}

var (
	_ consume.Source      = (*source)(nil)
	_ consume.Heartbeater = (*source)(nil)
)
