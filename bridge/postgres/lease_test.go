package postgres_test

import (
	"fmt"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/bridgetest"
)

// With prefetch (default 16) a Concurrency-1 subscription claims 17 rows
// at once; the leases of the rows that wait for their turn are renewed, so
// a handler slower than ack_deadline/17 still gets them in order, each
// delivered once (without renewal they expired, came back out of order and
// counted deliveries no handler failed: the dead-letter budget spent by
// waiting alone).
func TestPrefetchedLeasesRunOut(t *testing.T) {
	raw := schemaURL(t, "ack_deadline", "500ms")
	b := openBridge(t, raw)
	spec := bridge.Spec{Topic: bridgetest.Unique("prefetch"), Group: "svc.v1", Kind: bridge.Event, Concurrency: 1}
	ch, _ := bridgetest.Subscribe(t, b, spec)
	var want []string
	for i := range 10 {
		want = append(want, fmt.Sprintf("m%02d", i))
	}
	bridgetest.Publish(t, b, spec.Topic, want...)
	var got, counts []string
	for len(got) < len(want) {
		m := bridgetest.Receive(t, ch, wait)
		time.Sleep(150 * time.Millisecond) // a handler well within ack_deadline
		m.Ack()
		got = append(got, string(m.Payload))
		counts = append(counts, m.Metadata.Get(bridge.DeliveryKey))
	}
	t.Logf("order: %v", got)
	t.Logf("_delivery: %v", counts)
	if !slices.Equal(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
	for i, c := range counts {
		if c != "1" {
			t.Errorf("%s handed out with %s=%s, never nacked nor held past its deadline by a handler", got[i], bridge.DeliveryKey, c)
		}
	}
}

// Rows a closing member claimed ahead (prefetch) go back in their place
// (their publication time), not behind every row published meanwhile, so a
// Concurrency-1 subscription keeps its order across members.
func TestReleasedRowsKeepTheirPlace(t *testing.T) {
	raw := schemaURL(t, "prefetch", "1")
	b := openBridge(t, raw)
	spec := bridge.Spec{Topic: bridgetest.Unique("release"), Group: "svc.v1", Kind: bridge.Event, Concurrency: 1}
	ch, sub := bridgetest.Subscribe(t, b, spec)
	bridgetest.Publish(t, b, spec.Topic, "1", "2", "3")
	m := bridgetest.Receive(t, ch, wait) // "2" claimed ahead, "3" not
	time.Sleep(200 * time.Millisecond)
	closed := make(chan error, 1)
	go func() { closed <- sub.Close() }() // releases "2" at once, waits for "1"'s verdict
	time.Sleep(200 * time.Millisecond)
	m.Ack()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	dumpQueue(t, raw)
	// The next member claims one row at a time (a claim of several sorts
	// them by id, which hides the problem within one batch).
	ch2, _ := bridgetest.Subscribe(t, openBridge(t, withParams(raw, "prefetch", "0")), spec)
	var got []string
	for range 2 {
		m := bridgetest.Receive(t, ch2, wait)
		m.Ack()
		got = append(got, string(m.Payload))
	}
	if !slices.Equal(got, []string{"2", "3"}) {
		t.Fatalf("after a member closed: %v, want [2 3]", got)
	}
}

func dumpQueue(t *testing.T, raw string) {
	u, _ := url.Parse(raw)
	schema := u.Query().Get("schema")
	conn, err := pgx.Connect(t.Context(), baseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	rows, err := conn.Query(t.Context(), "SELECT id, payload, published_at, visible_at, attempts FROM "+schema+".bridge_queue ORDER BY visible_at, id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		var p []byte
		var pa, va time.Time
		var at int32
		_ = rows.Scan(&id, &p, &pa, &va, &at)
		t.Logf("row %d %q published %s visible %s attempts %d", id, p, pa.Format("15:04:05.000"), va.Format("15:04:05.000"), at)
	}
}
