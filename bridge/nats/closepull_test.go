package nats_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/bridgetest"
)

// TestClosingSubscriberStrandsNoMessage: a subscriber closed while its pull
// request is outstanding must not leave a message the server assigned to
// that request stranded until ack_wait (30 s here): another member of the
// group gets every message within seconds. Subscribers are closed in the
// middle of a stream of publishes, many times over.
func TestClosingSubscriberStrandsNoMessage(t *testing.T) {
	b := openURL(t, withParams(t, "ack_wait=30s"))
	spec := bridge.Spec{Topic: "sbtest." + bridgetest.Unique("closepull"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 4}

	var mu sync.Mutex
	seen := map[string]bool{}
	consume := func(ch <-chan *message.Message) {
		for m := range ch {
			mu.Lock()
			seen[string(m.Payload)] = true
			mu.Unlock()
			m.Ack()
		}
	}
	stay, _ := bridgetest.Subscribe(t, b, spec) // the member that stays
	go consume(stay)

	const rounds, perRound = 25, 20
	for r := range rounds {
		sub, err := b.Subscriber(t.Context(), spec)
		if err != nil {
			t.Fatal(err)
		}
		ch, err := sub.Subscribe(context.Background(), spec.Topic)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { consume(ch); close(done) }()
		time.Sleep(20 * time.Millisecond) // its pull requests are waiting at the server
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := range perRound {
				bridgetest.Publish(t, b, spec.Topic, fmt.Sprintf("r%d-%d", r, i))
			}
		})
		time.Sleep(time.Duration(r%5) * time.Millisecond)
		if err := sub.Close(); err != nil {
			t.Fatal(err)
		}
		<-done
		wg.Wait()
	}
	bridgetest.WaitFor(t, 8*time.Second, "every message, well before ack_wait", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == rounds*perRound
	})
}
