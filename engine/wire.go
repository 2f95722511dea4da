package engine

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/internal/envelope"
	"github.com/switchboard-go/switchboard/router"
)

// metadataLimits refuses a message whose metadata exceeds package
// envelope's limits before any other middleware or the handler sees it.
// The 431 is permanent: an awaited command is answered with it, anything
// else is dead-lettered at once instead of being redelivered.
func metadataLimits(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		if err := envelope.CheckMetadata(msg.Metadata); err != nil {
			return nil, err
		}
		return h(msg)
	}
}

// validReplyTo reports whether replyTo names a reply topic, so that a
// caller waits for the reply there.
func validReplyTo(replyTo string) bool {
	return replyTo != "" && router.ValidReplyTopic(replyTo) == nil
}

// replyToCheck refuses a command whose reply_to is set but is not a reply
// topic (see router.ValidReplyTopic), before the handler runs: publishing
// the result there could run another service's command with this one's
// principal, or fail on every delivery. The 400 is permanent, so DeadLetter
// stores the message with the reason (unlessAwaited lets it see such a
// message) and nothing is published to the forged topic.
func replyToCheck(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		if rt := msg.Metadata.Get(envelope.KeyReplyTo); rt != "" {
			if err := router.ValidReplyTopic(rt); err != nil {
				return nil, &Error{Code: http.StatusBadRequest, Reason: "invalid_reply_to", Message: "reply_to: " + err.Error()}
			}
		}
		return h(msg)
	}
}

// errorReply builds the reply that answers the command handled in ctx
// with we.
func (e *Engine) errorReply(ctx context.Context, we *Error) *message.Message {
	reply, _, _ := e.outgoing(ctx, "", envelope.KindReply, envelope.MarshalError(we), time.Time{})
	reply.Metadata.Set(envelope.KeyError, "1")
	return reply
}

// sendReply publishes the reply to cmd, the command handled in ctx, and
// returns what the handler returns to the router (nil acks cmd). What
// happens when the reply cannot be published depends on why:
//   - nobody listens on replyTo (the caller is gone): dropped, cmd acked;
//   - the backend is unreachable or closing: cmd is nacked and redelivered,
//     so it runs again; its caller's deadline bounds that (a command that
//     arrives after it is not handled);
//   - anything else (too large for the backend, refused by it) is
//     permanent: redelivering would re-run the handler for the same
//     refusal, so the caller is answered with a 500 instead (also when
//     the reply was an error too large for the backend), and cmd is acked
//     even if that answer cannot be published either (the caller then
//     times out). The command never runs again for it.
func (e *Engine) sendReply(ctx context.Context, replyTo string, reply, cmd *message.Message, l msgLogger) error {
	err := e.hand(replyTo, reply)
	if err == nil {
		return nil
	}
	log := l.get()
	switch {
	case errors.Is(err, bridge.ErrNoSubscriber):
		log.Warn("caller is gone; reply dropped", "reply_to", replyTo)
		return nil
	case errors.Is(err, bridge.ErrUnreachable) || errors.Is(err, bridge.ErrClosed):
		log.Error("reply not published; the command will be redelivered", "reply_to", replyTo, "err", err)
		return err
	}
	isError := reply.Metadata.Get(envelope.KeyError) == "1"
	tooLarge := errors.Is(err, bridge.ErrTooLarge)
	if isError && !tooLarge { // the small 500 below would be refused alike
		log.Error("error reply cannot be published; the caller will time out", "reply_to", replyTo, "err", err)
		return nil
	}
	log.Error("reply cannot be published; answering with an error instead", "reply_to", replyTo, "err", err)
	problem := "the result could not be sent"
	switch {
	case tooLarge && isError:
		problem = "the error is too large for the transport"
	case tooLarge:
		problem = "the result is too large for the transport"
	}
	alt := e.errorReply(ctx, with(ErrInternal, problem, map[string]any{"message_id": cmd.UUID}))
	alt.SetContext(reply.Context())
	if err := e.hand(replyTo, alt); err != nil && !errors.Is(err, bridge.ErrNoSubscriber) {
		log.Error("error reply cannot be published either; the caller will time out", "reply_to", replyTo, "err", err)
	}
	return nil
}
