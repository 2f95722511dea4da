package main

import (
	"context"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
)

// gochannelTransport is Watermill's GoChannel with its default config, one
// instance per figure serving every role (as in the cqrs and requestreply
// examples). GoChannel has no consumer groups: each subscribing service's
// handler subscribes once and so gets its own copy of every event; replies
// go to a topic per request, which GoChannel removes with its subscriber.
func gochannelTransport(_ context.Context, ns string) (*transport, error) {
	ps := gochannel.NewGoChannel(gochannel.Config{}, wlog)
	sub := func(string) (message.Subscriber, error) { return ps, nil }
	return &transport{
		cmdPub: ps, evtPub: ps, replyPub: ps,
		cmdSub: sub, evtSub: sub, replySub: ps,
		topic:      func(name string) string { return ns + "." + name },
		replyTopic: func(opID string) string { return "reply." + opID },
		close:      ps.Close,
	}, nil
}
