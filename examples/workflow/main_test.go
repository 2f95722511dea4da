package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/switchboard-go/switchboard/internal/testenv"
)

// The program runs the same workflow on every transport, with nothing but
// the bridge's URL changed, and exits by itself: one order completes, the
// other fails at the reservation and is refunded; each participant's
// effect happened once; the store recorded the steps in order.
func TestWorkflowExample(t *testing.T) {
	t.Run("inproc", func(t *testing.T) { example(t, "") })
	for _, server := range []string{testenv.NATS, testenv.AMQP, testenv.Postgres} {
		t.Run(server, func(t *testing.T) {
			bridgeURL := testenv.URL(t, server)
			if server == testenv.Postgres { // the bridge's tables apart from the store's
				bridgeURL += "&schema=" + testenv.Schema(t, testenv.PostgresDB(t))
			}
			example(t, bridgeURL)
		})
	}
}

// stepLine is a step as printRun prints it, without its duration.
var stepLine = regexp.MustCompile(`(?m)^  (\d+)  (\S+) +(\S+) +\S+ +(.*)$`)

func example(t *testing.T, bridgeURL string) {
	db := testenv.PostgresDB(t)
	schema := testenv.Schema(t, db)
	var out bytes.Buffer
	if err := run(t.Context(), &out, testenv.URL(t, testenv.Postgres), bridgeURL, schema); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []string{
		"(2 × book): completed: payment pay-1, reservation res-1, tracking TRK-1\n" +
			"  rows: 1 payment(s), 0 refunded; 1 reservation(s), 0 released; 1 shipment(s)\n",
		"(1 × unicorn): failed: 409 Conflict (out_of_stock): 1 × unicorn wanted, not in stock\n" +
			"  rows: 1 payment(s), 1 refunded; 0 reservation(s), 0 released; 0 shipment(s)\n",
		"(orders.v1.place): completed, claimed ",
		"(orders.v1.place): failed, claimed 1 time(s)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	var steps []string
	for _, m := range stepLine.FindAllStringSubmatch(got, -1) {
		name := m[3]
		if strings.HasPrefix(name, "shipping.shipped/") {
			name = "shipping.shipped/<order>"
		}
		steps = append(steps, m[1]+" "+m[2]+" "+name+" "+m[4])
	}
	wantSteps := []string{
		// the completed order
		"1 invoke payments.v1.charge ok",
		"2 invoke inventory.v1.reserve ok",
		"3 invoke shipping.v1.ship ok",
		"4 await shipping.shipped/<order> ok",
		"5 sleep sleep ok",
		"6 emit orders.completed ok",
		// the failed one: the refund compensates the charge
		"1 invoke payments.v1.charge ok",
		"2 invoke inventory.v1.reserve 409 Conflict (out_of_stock): 1 × unicorn wanted, not in stock",
		"3 compensate payments.v1.refund ok",
	}
	if strings.Join(steps, "\n") != strings.Join(wantSteps, "\n") {
		t.Errorf("steps:\n%s\nwant:\n%s\noutput:\n%s", strings.Join(steps, "\n"), strings.Join(wantSteps, "\n"), got)
	}
	// The 1.5 s sleep gave the run back: a runner claimed it again at its
	// due time. Claims: one to start, one after the sleep, and one after the
	// await unless the event was stored before the run reached it.
	if !strings.Contains(got, "completed, claimed 3 time(s)") && !strings.Contains(got, "completed, claimed 2 time(s)") {
		t.Errorf("the completed run was not claimed again after its sleep:\n%s", got)
	}
}
