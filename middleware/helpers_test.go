package middleware_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// errTransient is an error Retry, DeadLetter and Breaker treat as worth
// retrying.
var errTransient = errors.New("downstream hiccup")

// quiet is a logger that discards everything.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// newMsg returns a fresh message carrying ctx and the given metadata pairs.
func newMsg(ctx context.Context, kv ...string) *message.Message {
	msg := message.NewMessage(watermill.NewUUID(), []byte(`{"n":1}`))
	msg.SetContext(ctx)
	for i := 0; i+1 < len(kv); i += 2 {
		msg.Metadata.Set(kv[i], kv[i+1])
	}
	return msg
}

// counter is a handler whose outcome per call is scripted; it counts the
// calls and records the AttemptKey each one saw.
type counter struct {
	calls    atomic.Int32
	mu       sync.Mutex
	attempts []string
	outcome  func(call int) error
}

func (c *counter) handle(msg *message.Message) ([]*message.Message, error) {
	n := int(c.calls.Add(1))
	c.mu.Lock()
	c.attempts = append(c.attempts, msg.Metadata.Get("attempt"))
	c.mu.Unlock()
	if c.outcome == nil {
		return nil, nil
	}
	return nil, c.outcome(n)
}

func (c *counter) seen() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.attempts...)
}

// failing returns an outcome that fails with err on the first n calls, then
// succeeds.
func failing(n int, err error) func(int) error {
	return func(call int) error {
		if call <= n {
			return err
		}
		return nil
	}
}

// always returns an outcome that always fails with err.
func always(err error) func(int) error { return func(int) error { return err } }

// within runs f in a goroutine and fails the test if it has not returned
// after limit: a guard against hangs, not a measure of speed.
func within(t *testing.T, limit time.Duration, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(limit):
		t.Fatalf("did not return within %s", limit)
	}
}

func containsStr(s, sub string) bool { return strings.Contains(s, sub) }
