package middleware

import (
	"context"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// ErrAttemptTimeout is returned (wrapped) when one attempt outlives its
// Timeout. It is transient: Retry tries again.
var ErrAttemptTimeout = fmt.Errorf("handler attempt timed out: %w", context.DeadlineExceeded)

// Timeout gives each call of the next handler at most d, from a context
// derived from the message's and restored afterwards, so that a retry
// around it starts with a fresh deadline. A handler that ignores its
// context is abandoned at the deadline (its goroutine finishes on its own)
// and the attempt fails with ErrAttemptTimeout. d ≤ 0 disables it.
func Timeout(d time.Duration) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		if d <= 0 {
			return h
		}
		return func(msg *message.Message) ([]*message.Message, error) {
			orig := msg.Context()
			ctx, cancel := context.WithTimeout(orig, d)
			defer cancel()
			// The attempt gets its own copy: an abandoned attempt may still
			// be running while Retry starts the next one on msg.
			attempt := msg.Copy()
			attempt.SetContext(ctx)
			type result struct {
				out []*message.Message
				err error
			}
			done := make(chan result, 1)
			go func() {
				defer func() {
					if v := recover(); v != nil {
						done <- result{err: newPanicError(v)}
					}
				}()
				out, err := h(attempt)
				done <- result{out, err}
			}()
			select {
			case r := <-done:
				msg.Metadata = attempt.Metadata // what the handler's middleware set
				return r.out, r.err
			case <-ctx.Done():
				if orig.Err() != nil {
					return nil, orig.Err()
				}
				return nil, fmt.Errorf("after %s: %w", d, ErrAttemptTimeout)
			}
		}
	}
}
