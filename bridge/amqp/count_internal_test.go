package amqp

import (
	"testing"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// The delivery count is read from headers a publisher can forge: a forged
// value must not overflow it, make it zero or negative (a message without a
// count could never reach the engine's MaxDeliveries and would be
// redelivered for ever), or make it absurd.
func TestDeliveryCountIgnoresForgedHeaders(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers amqp091.Table
		want    int64
	}{
		{"none", nil, 1},
		{"ours", amqp091.Table{headerDeliveries: "2"}, 3},
		{"huge", amqp091.Table{headerDeliveries: "9223372036854775807"}, 1},
		{"negative", amqp091.Table{headerDeliveries: "-5"}, 1},
		{"x-death negative", amqp091.Table{"x-death": []any{amqp091.Table{"reason": "rejected", "count": int64(-100)}}}, 1},
		{"x-death huge", amqp091.Table{"x-death": []any{
			amqp091.Table{"reason": "rejected", "count": int64(1 << 62)},
			amqp091.Table{"reason": "rejected", "count": int64(1 << 62)},
		}}, 1},
		{"x-death", amqp091.Table{"x-death": []any{amqp091.Table{"reason": "rejected", "count": int64(2)}}}, 3},
	} {
		if got := deliveryCount(amqp091.Delivery{Headers: tc.headers}); got != tc.want {
			t.Errorf("%s: deliveryCount = %d, want %d", tc.name, got, tc.want)
		}
	}
}
