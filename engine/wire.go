package engine

import (
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/envelope"
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
