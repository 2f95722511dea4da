package amqp

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-go/switchboard/bridge"
)

// maxNameLen is RabbitMQ's limit on queue names, in bytes.
const maxNameLen = 255

// maxDelay is the longest nack delay; longer requests are cut to it.
const maxDelay = 24 * time.Hour

// longestSuffix is the longest suffix added to a group's queue name: the
// delay queue of maxDelay.
var longestSuffix = len(delayQueueSuffix(maxDelay))

// queueNames returns the group's queue and its retry queue. Names from
// package router never contain '@', so "<group>@<topic>" (exactly one '@')
// cannot collide with another group's queue nor with the retry and delay
// queues derived from it ("…@retry", "…@retry-<ms>ms"); specs with '@' are
// refused.
func queueNames(spec bridge.Spec) (queue, retry string, err error) {
	if strings.Contains(spec.Group, "@") || strings.Contains(spec.Topic, "@") {
		return "", "", fmt.Errorf("amqp: group %q / topic %q: '@' is reserved as the queue name separator", spec.Group, spec.Topic)
	}
	queue = spec.Group + "@" + spec.Topic
	if len(queue)+longestSuffix > maxNameLen {
		return "", "", fmt.Errorf("amqp: group %q plus topic %q are longer than %d bytes, the most a queue name allows", spec.Group, spec.Topic, maxNameLen-longestSuffix-1)
	}
	return queue, queue + "@retry", nil
}

// delaySteps are the mantissas of the delays delay queues are made for:
// 1, 1.2, 1.5, 1.7, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 8, 9 × 10^k ms.
var delaySteps = []int64{10, 12, 15, 17, 20, 25, 30, 35, 40, 50, 60, 70, 80, 90}

// roundDelay rounds d up to the next delay of the series (at most 25 %
// later; never earlier), within [1 ms, maxDelay].
func roundDelay(d time.Duration) time.Duration {
	ms := int64((d + time.Millisecond - 1) / time.Millisecond)
	if ms < 1 {
		ms = 1
	}
	if ms >= maxDelay.Milliseconds() {
		return maxDelay
	}
	for scale := int64(1); ; scale *= 10 {
		for _, m := range delaySteps {
			if v := m * scale / 10; v >= ms {
				return min(time.Duration(v)*time.Millisecond, maxDelay)
			}
		}
	}
}

func delayQueueSuffix(d time.Duration) string {
	return "@retry-" + strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}

// topology is what one subscription needs; consumers declare it on every
// (re)connect, so it is back after a broker restart.
//
//   - exchange: durable direct exchange, routing key = topic, shared by all
//     topics (also declared by the publisher);
//   - queue: the group's queue, bound to the exchange with the topic as key.
//     Durable for Command and Event; exclusive and auto-delete for Reply.
//     Its dead-letter target is the retry queue (through the default
//     exchange), so a Nack (reject without requeue) parks the message there;
//   - retry queue: holds nacked messages for bridge.DefaultNackDelay
//     (x-message-ttl), then dead-letters them back to the group's queue
//     only (default exchange, routing key = queue name). It has no
//     consumer. One that exists with other arguments (another TTL, from a
//     version that had a nack_delay parameter) is used as it is: see
//     declareRetry;
//   - delay queues, declared on demand when a Nack asks for its own delay
//     (bridge.NackDelayKey): like the retry queue, one per rounded delay,
//     removed by the broker when unused for the delay plus delayQueueIdle.
type topology struct {
	exchange     string
	topic        string
	kind         bridge.Kind
	queue, retry string
	expires      time.Duration // x-expires for durable queues; 0 = none
}

// delayQueueIdle is how long a delay queue outlives its last use. Every
// message in it expires within the delay, so none is lost with the queue.
const delayQueueIdle = 10 * time.Minute

func declareExchange(ch *amqp091.Channel, name string) error {
	if err := ch.ExchangeDeclare(name, amqp091.ExchangeDirect, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %q: %w", name, err)
	}
	return nil
}

// declare declares the retry queue (see declareRetry), then the exchange,
// the group's queue and its binding on ch. All are idempotent while the
// arguments stay the same. kept is not nil when an existing retry queue
// with other arguments is used as it is: it is the broker's refusal, which
// names the argument that differs.
func (t topology) declare(a *amqp091.Connection, ch *amqp091.Channel) (kept, err error) {
	if kept, err = t.declareRetry(a); err != nil {
		return nil, err
	}
	if err := declareExchange(ch, t.exchange); err != nil {
		return kept, err
	}
	exclusive := t.kind == bridge.Reply
	queueArgs := amqp091.Table{
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": t.retry,
	}
	if t.durable() && t.expires > 0 {
		queueArgs["x-expires"] = t.expires.Milliseconds()
	}
	if _, err := ch.QueueDeclare(t.queue, t.durable(), exclusive, exclusive, false, queueArgs); err != nil {
		return kept, fmt.Errorf("declare queue %q: %w", t.queue, explainDeclare(err))
	}
	if err := ch.QueueBind(t.queue, t.topic, t.exchange, false, nil); err != nil {
		return kept, fmt.Errorf("bind queue %q to exchange %q with key %q: %w", t.queue, t.exchange, t.topic, err)
	}
	return kept, nil
}

func (t topology) durable() bool { return t.kind != bridge.Reply }

// declareRetry declares the retry queue, on channels of its own: the broker
// closes the channel a declaration fails on. When the queue exists with
// other arguments (PRECONDITION_FAILED: a TTL other than
// bridge.DefaultNackDelay, from a version that had a nack_delay parameter,
// or another queue_expires), it is used as it is, after a passive
// declaration, rather than failing every Subscribe: deleting it would drop
// the messages parked in it. kept is then the broker's refusal.
func (t topology) declareRetry(a *amqp091.Connection) (kept, err error) {
	exclusive := t.kind == bridge.Reply
	args := amqp091.Table{
		"x-message-ttl":             bridge.DefaultNackDelay.Milliseconds(),
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": t.queue,
	}
	if t.durable() && t.expires > 0 {
		args["x-expires"] = t.expires.Milliseconds()
	}
	err = withChannel(a, func(ch *amqp091.Channel) error {
		_, err := ch.QueueDeclare(t.retry, t.durable(), false, exclusive, false, args)
		return err
	})
	var refused *amqp091.Error
	if err == nil || !errors.As(err, &refused) || refused.Code != amqp091.PreconditionFailed {
		if err != nil {
			return nil, fmt.Errorf("declare retry queue %q: %w", t.retry, explainDeclare(err))
		}
		return nil, nil
	}
	if perr := withChannel(a, func(ch *amqp091.Channel) error {
		_, err := ch.QueueDeclarePassive(t.retry, t.durable(), false, exclusive, false, nil)
		return err
	}); perr != nil {
		return nil, fmt.Errorf("declare retry queue %q: %w; passively: %w", t.retry, err, perr)
	}
	return err, nil
}

// declareDelay declares the delay queue for d (already rounded) and returns
// its name. Delay queues are durable for durable groups; for Reply groups
// they are not, and not exclusive either, so the publishing connection can
// declare them.
func (t topology) declareDelay(ch *amqp091.Channel, d time.Duration) (string, error) {
	name := t.queue + delayQueueSuffix(d)
	args := amqp091.Table{
		"x-message-ttl":             d.Milliseconds(),
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": t.queue,
		"x-expires":                 (d + delayQueueIdle).Milliseconds(),
	}
	if _, err := ch.QueueDeclare(name, t.kind != bridge.Reply, false, false, false, args); err != nil {
		return "", fmt.Errorf("declare delay queue %q: %w", name, explainDeclare(err))
	}
	return name, nil
}

// explainDeclare adds the likely cause to RabbitMQ's refusals.
func explainDeclare(err error) error {
	var e *amqp091.Error
	if errors.As(err, &e) {
		switch e.Code {
		case amqp091.PreconditionFailed:
			return fmt.Errorf("%w (the queue exists with other properties: its kind and queue_expires cannot change once it exists; delete it or keep the old values)", err)
		case amqp091.ResourceLocked:
			return fmt.Errorf("%w (a reply queue belongs to the connection that declared it: another instance uses this group)", err)
		}
	}
	return err
}

// headerDeliveries carries, on a message the bridge moved to a delay queue,
// how many deliveries to this group it had before the move.
const headerDeliveries = "x-switchboard-deliveries"

// deliveryCount is the number of this delivery to the group: deliveries
// before the message's last move to a delay queue, plus its rejections
// since (the broker's x-death count), plus this one, plus one more when the
// broker flags it redelivered (requeued after a lost channel or consumer;
// several such requeues count once).
func deliveryCount(d amqp091.Delivery) int64 {
	var n int64 = 1
	if v, ok := d.Headers[headerDeliveries].(string); ok {
		// The header is wire input: bounded, so that a forged one cannot
		// overflow the count.
		if before, err := strconv.ParseInt(v, 10, 64); err == nil && before > 0 && before < 1<<30 {
			n += before
		}
	}
	deaths, _ := d.Headers["x-death"].([]any)
	for _, x := range deaths {
		if t, ok := x.(amqp091.Table); ok && t["reason"] == "rejected" {
			if c, ok := t["count"].(int64); ok && c > 0 && c < 1<<30 {
				n += c
			}
		}
	}
	if d.Redelivered {
		n++
	}
	return min(n, 1<<30)
}

// brokerHeader reports headers that describe one delivery, not the message:
// the broker's dead-letter bookkeeping and the bridge's own counters.
func brokerHeader(k string) bool {
	return k == "x-death" || strings.HasPrefix(k, "x-first-death-") || strings.HasPrefix(k, "x-last-death-") ||
		k == headerDeliveries || k == bridge.DeliveryKey || k == bridge.NackDelayKey
}

// marshaler is Watermill's DefaultMarshaler (persistent delivery, metadata as
// string headers, UUID in a header) made safe for what the broker adds.
//
// The default Unmarshal fails on any non-string header, and a message that
// cannot be unmarshaled is nacked, dead-lettered, retried and fails again
// forever. The broker adds non-string headers itself when it dead-letters a
// message (x-death, an array of tables), so every retried message would be
// such a poison message; and it panics on a message with no headers.
// Unmarshal here drops the dead-letter bookkeeping, formats any other
// non-string header as text, falls back to the AMQP message-id for a missing
// UUID, and sets bridge.DeliveryKey (and Watermill's redelivered flag): it
// never fails. Marshal leaves per-delivery metadata (bridge.DeliveryKey,
// bridge.NackDelayKey) out and sets the AMQP message-id to the UUID.
type marshaler struct{ wamqp.DefaultMarshaler }

// Marshal implements wamqp.Marshaler.
func (m marshaler) Marshal(msg *message.Message) (amqp091.Publishing, error) {
	p, err := m.DefaultMarshaler.Marshal(msg)
	if err != nil {
		return p, err
	}
	for k := range p.Headers {
		if brokerHeader(k) {
			delete(p.Headers, k)
		}
	}
	p.MessageId = msg.UUID
	return p, nil
}

// Unmarshal implements wamqp.Marshaler (see decode); it never fails.
func (m marshaler) Unmarshal(d amqp091.Delivery) (*message.Message, error) {
	msg, count := m.decode(d)
	msg.Metadata.Set(bridge.DeliveryKey, strconv.FormatInt(count, 10))
	return msg, nil
}

// decode builds the message of a delivery, and says how many times it has
// been delivered (deliveryCount), in one pass over the headers and with no
// copy of them (the default Unmarshal needs one, and panics on a message
// with no headers at all).
func (marshaler) decode(d amqp091.Delivery) (*message.Message, int64) {
	id := d.MessageId
	md := make(message.Metadata, len(d.Headers))
	for k, v := range d.Headers {
		s, ok := v.(string)
		if !ok {
			s = fmt.Sprint(v)
		}
		switch {
		case k == wamqp.DefaultMessageUUIDHeaderKey:
			id = s
		case brokerHeader(k):
		default:
			md[k] = s
		}
	}
	if d.Redelivered {
		md[wamqp.MetadataRedeliveredKey] = "true"
	}
	msg := message.NewMessage(id, d.Body)
	msg.Metadata = md
	return msg, deliveryCount(d)
}

// delayedCopy is what goes to a delay queue for a delivery nacked with its
// own delay: the same message (body, headers, properties) minus the
// broker's bookkeeping, with the deliveries so far.
func delayedCopy(d amqp091.Delivery, deliveries int64, persistent bool) amqp091.Publishing {
	headers := make(amqp091.Table, len(d.Headers)+1)
	for k, v := range d.Headers {
		if !brokerHeader(k) {
			headers[k] = v
		}
	}
	headers[headerDeliveries] = strconv.FormatInt(deliveries, 10)
	p := amqp091.Publishing{
		Headers:         headers,
		ContentType:     d.ContentType,
		ContentEncoding: d.ContentEncoding,
		Priority:        d.Priority,
		CorrelationId:   d.CorrelationId,
		ReplyTo:         d.ReplyTo,
		MessageId:       d.MessageId,
		Timestamp:       d.Timestamp,
		Type:            d.Type,
		AppId:           d.AppId,
		Body:            d.Body,
	}
	if persistent {
		p.DeliveryMode = amqp091.Persistent
	}
	return p
}
