package dispatch

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/internal/envelope"
)

// Calls is the table of requests waiting for their reply, keyed by the
// request's message id (a reply's causation id). The correlation id cannot
// be the key: it is shared by every call of one conversation, and a handler
// may have several calls in flight.
type Calls struct {
	mu      sync.Mutex
	pending map[string]chan *message.Message // each recycled by Forget
	idle    chan struct{}                    // made by WaitIdle, closed when pending empties
	// unsolicited counts the replies nobody waited for.
	unsolicited atomic.Uint64
}

// NewCalls returns an empty table.
func NewCalls() *Calls {
	return &Calls{pending: map[string]chan *message.Message{}}
}

// Expect registers a call before its request is published. The returned
// channel receives the reply at most once, and is only for receiving; Forget
// must be called when the caller stops waiting, whether or not a reply
// came, and the channel not used after it (it is recycled). ok is false,
// and nothing registered, when a call with requestID already waits (an id
// the caller chose twice: engine.WithMessageID).
func (c *Calls) Expect(requestID string) (reply chan *message.Message, ok bool) {
	ch := replyChans.Get().(chan *message.Message)
	c.mu.Lock()
	if _, taken := c.pending[requestID]; taken {
		c.mu.Unlock()
		replyChans.Put(ch)
		return nil, false
	}
	c.pending[requestID] = ch
	c.mu.Unlock()
	return ch, true
}

// Forget ends the call Expect registered; reply is what Expect returned.
func (c *Calls) Forget(requestID string, reply chan *message.Message) {
	c.mu.Lock()
	// Only this call's entry: a later call with the same id (a chosen one,
	// engine.WithMessageID) may have registered since this one's reply came.
	if ch, ok := c.pending[requestID]; ok && ch == reply {
		c.remove(requestID)
	}
	c.mu.Unlock()
	// Deliver sends only with c.mu held and the call in the table: nothing
	// is sent on reply any more. Empty it (a reply the caller did not take,
	// having timed out meanwhile) and recycle it.
	select {
	case <-reply:
	default:
	}
	replyChans.Put(reply)
}

// remove forgets a call; c.mu is held.
func (c *Calls) remove(requestID string) {
	delete(c.pending, requestID)
	if len(c.pending) == 0 && c.idle != nil {
		close(c.idle)
		c.idle = nil
	}
}

// replyChans recycles reply channels: a call makes one.
var replyChans = sync.Pool{New: func() any { return make(chan *message.Message, 1) }}

// WaitIdle waits until no call is waiting, or ctx ends; it reports whether
// the table emptied. Calls registered meanwhile count too.
func (c *Calls) WaitIdle(ctx context.Context) bool {
	c.mu.Lock()
	if len(c.pending) == 0 {
		c.mu.Unlock()
		return true
	}
	if c.idle == nil {
		c.idle = make(chan struct{})
	}
	idle := c.idle
	c.mu.Unlock()
	select {
	case <-idle:
		return true
	case <-ctx.Done():
		return false
	}
}

// Deliver hands a reply to its waiting caller. It returns false when nobody
// waits for it any more (the caller timed out or went away).
func (c *Calls) Deliver(reply *message.Message) bool {
	id := reply.Metadata.Get(envelope.KeyCausationID)
	c.mu.Lock()
	ch, ok := c.pending[id]
	if ok {
		c.remove(id)
		ch <- reply // buffered, empty, sent once: never blocks; under c.mu for Forget
	}
	c.mu.Unlock()
	if !ok {
		c.unsolicited.Add(1)
	}
	return ok
}

// Unsolicited returns how many replies Deliver was handed that nobody
// waited for: late ones (their caller timed out or went away) and
// duplicates from an at-least-once backend. Listen logs each only at debug
// level, so this count is where a burst of them shows.
func (c *Calls) Unsolicited() uint64 { return c.unsolicited.Load() }

// Len returns the number of calls waiting.
func (c *Calls) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}
