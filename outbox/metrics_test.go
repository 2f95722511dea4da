package outbox_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/switchboard-go/switchboard/outbox"
)

// gaugeMeter records the int64 gauges and the callback RegisterMetrics
// registers, so a test can collect once.
type gaugeMeter struct {
	noop.Meter
	cb metric.Callback
}

type namedGauge struct {
	noop.Int64ObservableGauge
	name string
}

func (m *gaugeMeter) Int64ObservableGauge(name string, _ ...metric.Int64ObservableGaugeOption) (metric.Int64ObservableGauge, error) {
	return namedGauge{name: name}, nil
}

func (m *gaugeMeter) RegisterCallback(cb metric.Callback, _ ...metric.Observable) (metric.Registration, error) {
	m.cb = cb
	return noop.Registration{}, nil
}

type gaugeProvider struct {
	noop.MeterProvider
	m *gaugeMeter
}

func (p gaugeProvider) Meter(string, ...metric.MeterOption) metric.Meter { return p.m }

type int64Observer struct {
	noop.Observer
	got map[string]int64
}

func (o int64Observer) ObserveInt64(i metric.Int64Observable, v int64, _ ...metric.ObserveOption) {
	o.got[i.(namedGauge).name] = v
}

// The gauges count the rows retrying and parked.
func TestMetricsCountRetryingAndParked(t *testing.T) {
	_, db, schema := setup(t)
	if _, err := db.Exec(`INSERT INTO "` + schema + `".outbox (topic, uuid, payload, attempts, parked_at, retry_at) VALUES
		('a', '1', '\x00', 1, now(), NULL), ('b', '2', '\x00', 2, NULL, now() + interval '1 minute'), ('b', '3', '\x00', 0, NULL, NULL)`); err != nil {
		t.Fatal(err)
	}
	m := &gaugeMeter{}
	if err := outbox.RegisterMetrics(gaugeProvider{m: m}, db, schema); err != nil {
		t.Fatal(err)
	}
	o := int64Observer{got: map[string]int64{}}
	if err := m.cb(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"switchboard.outbox.backlog": 2, "switchboard.outbox.retrying": 1, "switchboard.outbox.parked": 1}
	for name, v := range want {
		if o.got[name] != v {
			t.Errorf("%s = %d, want %d (all: %v)", name, o.got[name], v, o.got)
		}
	}
}
