package inproc_test

import (
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/bridgetest"
	"github.com/switchboard-go/switchboard/bridge/inproc"
)

func TestConformance(t *testing.T) {
	bus := bridgetest.Unique("bus") // one shared bus per test run
	bridgetest.Run(t, bridgetest.Harness{
		URL:  "gochannel://" + bus,
		Wait: 5 * time.Second,
	})
}

func TestBadURL(t *testing.T) {
	for _, u := range []string{"gochannel://?nack_delay=soon", "gochannel://?colour=blue"} {
		if _, err := bridge.Open(t.Context(), u); err == nil {
			t.Errorf("Open(%q) succeeded", u)
		}
	}
	_ = inproc.DefaultNackDelay
}
