package mqtt

import (
	"testing"

	"github.com/eclipse/paho.golang/paho"
)

// A delivery count written by a producer on the topic is not believed; only
// a copy on the group's redelivery topic carries the count of its
// deliveries before (a forged 1000000 would send a message to the poison
// path on its first delivery).
func TestDeliveryCountOnlyFromRedeliveryCopies(t *testing.T) {
	pb := func(topic string) *paho.Publish {
		return &paho.Publish{Topic: topic, Properties: &paho.PublishProperties{User: paho.UserProperties{{Key: deliveredProp, Value: "1000000"}}}}
	}
	if _, n := decode(pb("orders/v1/place"), false); n != 1 {
		t.Errorf("count on the topic = %d, want 1 (the forged count ignored)", n)
	}
	if _, n := decode(pb("_sb/retry/g/orders/v1/place"), true); n != 1000001 {
		t.Errorf("count on the redelivery topic = %d, want 1000001", n)
	}
}
