package middleware

import (
	"context"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// ErrAttemptTimeout is returned (wrapped) when one attempt outlives its
// AttemptTimeout. It is transient: Retry tries again.
var ErrAttemptTimeout = fmt.Errorf("handler attempt timed out: %w", context.DeadlineExceeded)

// AttemptTimeout gives each call of the next handler — one attempt — at
// most d, from a context derived from the message's and restored
// afterwards, so that a Retry around it starts each attempt with a fresh
// deadline. At the deadline the context is cancelled and AttemptTimeout
// waits for the handler to return: it owns the message until then, and
// abandoning it would run it beside the next attempt or the message's
// redelivery. A handler that ignores its context is therefore not cut
// short; its result stands, as its work is done. An attempt that fails
// after its deadline fails with ErrAttemptTimeout. d ≤ 0 disables it.
func AttemptTimeout(d time.Duration) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		if d <= 0 {
			return h
		}
		return func(msg *message.Message) (out []*message.Message, err error) {
			orig := msg.Context()
			ctx, cancel := context.WithTimeout(orig, d)
			defer cancel()
			msg.SetContext(ctx)
			defer msg.SetContext(orig)
			defer func() {
				if v := recover(); v != nil {
					out, err = nil, newPanicError(v)
				}
			}()
			out, err = h(msg)
			if err != nil && ctx.Err() != nil && orig.Err() == nil {
				return nil, fmt.Errorf("after %s: %w", d, ErrAttemptTimeout)
			}
			return out, err
		}
	}
}
