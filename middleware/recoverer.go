package middleware

import (
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/ThreeDotsLabs/watermill/message"
)

// PanicError is a recovered panic. It is transient: a panic caused by a
// bad payload should be answered with a permanent error instead.
type PanicError struct {
	Value any    // the value passed to panic
	Stack string // the goroutine's stack where it panicked
}

// Error says "panic: " and the panic's value.
func (p *PanicError) Error() string { return fmt.Sprintf("panic: %v", p.Value) }

func newPanicError(v any) *PanicError { return &PanicError{Value: v, Stack: string(debug.Stack())} }

// Recoverer turns a panic in the next handler into a *PanicError and logs
// it with its stack, so that Retry and DeadLetter see a failure instead of a
// crashed goroutine.
func Recoverer(log *slog.Logger) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) (out []*message.Message, err error) {
			defer func() {
				if v := recover(); v != nil {
					p := newPanicError(v)
					log.Error("handler panicked", "message_id", msg.UUID, "panic", fmt.Sprint(v), "stack", p.Stack)
					out, err = nil, p
				}
			}()
			return h(msg)
		}
	}
}
