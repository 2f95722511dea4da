package nats

import (
	"strings"
	"testing"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/bridgetest"
	"github.com/switchboard-go/switchboard/internal/testenv"
)

// The consumer checks a reconnection starts belong to their subscriber:
// when its Close returns, none runs any more. (They used to be left to end
// on their own, after Close.)
func TestCloseWaitsForTheChecksOfAReconnection(t *testing.T) {
	url := strings.TrimSuffix(testenv.URL(t, testenv.NATS), "/") + "?stream_prefix=SBTEST_&max_age=1h"
	b, err := bridge.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	spec := bridge.Spec{Topic: bridgetest.Unique("recon"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 1}
	for round := range 20 {
		sub, err := b.Subscriber(t.Context(), spec)
		if err != nil {
			t.Fatal(err)
		}
		b.(*natsBridge).reconnected() // as the client's reconnect handler does
		if err := sub.Close(); err != nil {
			t.Fatal(err)
		}
		if left := bridgetest.GoroutinesIn("github.com/switchboard-go/switchboard/bridge/nats.(*subscriber).reconnected"); len(left) > 0 {
			t.Fatalf("round %d: a consumer check runs after its subscriber's Close returned:\n%s", round, strings.Join(left, "\n\n"))
		}
	}
}
