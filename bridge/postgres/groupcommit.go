package postgres

import (
	"context"
	"errors"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"
)

// maxCommitBatch bounds the messages one group-commit statement inserts.
const maxCommitBatch = 1000

// errNoGroup is a publish request's answer when its topic had no group.
var errNoGroup = errors.New("no group")

// pubReq is one Publish call waiting for its statement.
type pubReq struct {
	ctx      context.Context // the caller's: a request it no longer waits for is dropped
	topic    string
	uuids    []string
	payloads [][]byte
	metas    []string
	done     chan error // 1-buffered
}

// committer coalesces concurrent Publish calls (group commit): while one
// statement runs, the calls that arrive meanwhile are collected and the next
// statement inserts all their rows and sends one NOTIFY per topic, in one
// commit. A call that arrives while none runs is sent at once, alone, so
// batching adds no delay; the notification queue's lock, which serialises
// committing publishers, is then taken once per batch, not once per call.
type committer struct {
	b *Bridge

	mu      sync.Mutex
	running bool
	pending []*pubReq
}

// publish queues r and returns its statement's error (errNoGroup when the
// topic had no group), or the error of r.ctx if that ends first.
func (c *committer) publish(r *pubReq) error {
	c.mu.Lock()
	c.pending = append(c.pending, r)
	if !c.running {
		c.running = true
		go c.flush()
	}
	c.mu.Unlock()
	select {
	case err := <-r.done:
		return err
	case <-r.ctx.Done():
		// The rows may still be committed: at least once.
		return r.ctx.Err()
	}
}

// flush runs the pending requests, a batch per statement, until none is
// left. Each statement is bounded by opTimeout and ended by Close.
func (c *committer) flush() {
	for {
		c.mu.Lock()
		var batch []*pubReq
		n := 0
		for len(c.pending) > 0 && (len(batch) == 0 || n+len(c.pending[0].uuids) <= maxCommitBatch) {
			r := c.pending[0]
			c.pending = c.pending[1:]
			if r.ctx.Err() != nil {
				r.done <- r.ctx.Err()
				continue
			}
			batch = append(batch, r)
			n += len(r.uuids)
		}
		if len(batch) == 0 && len(c.pending) == 0 {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		c.run(batch)
	}
}

func (c *committer) run(batch []*pubReq) {
	if len(batch) == 0 {
		return
	}
	b := c.b
	ctx, cancel := context.WithTimeout(b.ctx, opTimeout)
	defer cancel()
	if len(batch) == 1 {
		r := batch[0]
		_, err := b.pool.Exec(ctx, b.q.publish, r.topic, r.uuids, r.payloads, r.metas, b.channel)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == noSubscriberCode {
			err = errNoGroup
		}
		r.done <- err
		return
	}
	var topics, uuids, metas []string
	var payloads [][]byte
	for _, r := range batch {
		for range r.uuids {
			topics = append(topics, r.topic)
		}
		uuids = append(uuids, r.uuids...)
		payloads = append(payloads, r.payloads...)
		metas = append(metas, r.metas...)
	}
	groups := map[string]int64{}
	rows, err := b.pool.Query(ctx, b.q.publishMany, topics, uuids, payloads, metas, b.channel)
	if err == nil {
		for rows.Next() {
			var (
				topic  string
				n      int64
				notify any // pg_notify's void
			)
			if err = rows.Scan(&topic, &n, &notify); err != nil {
				break
			}
			groups[topic] = n
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "22") {
		// One request holds a message that cannot be stored, and the
		// statement stored nothing: each request on its own finds out which.
		for _, r := range batch {
			c.run([]*pubReq{r})
		}
		return
	}
	for _, r := range batch {
		switch {
		case err != nil:
			r.done <- err
		case groups[r.topic] == 0:
			r.done <- errNoGroup
		default:
			r.done <- nil
		}
	}
}
