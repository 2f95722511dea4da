// Package consume is the consumer runtime every backend shares: a backend
// supplies a Source per Subscribe call (fetch up to n messages, ack a
// batch, nack one with a delay, release what was never handed out, close),
// and a Subscriber built with New does the rest the same way on every
// backend:
//
//   - concurrency: at most Spec.Concurrency messages with the handlers
//     per Subscribe call, fetched in one request for as many as there are
//     free slots, so a backlog moves in batches; with Config.Prefetch, up
//     to that many more fetched ahead and handed out in order as slots
//     free up;
//   - the handler's verdict: Ack → acknowledged in batches (acks that
//     arrive while one batch is being acknowledged go together in the
//     next); Nack → redelivered to the group after bridge.NackDelay;
//   - delivery counting: bridge.DeliveryKey from Delivery.Count;
//   - heartbeats for backends that redeliver a message held too long
//     (Heartbeater);
//   - bounded close: Close stops fetching, gives back at once what no
//     handler took, waits for the verdicts of the messages handlers hold
//     (at most Config.CloseWait), acknowledges what was acked, then closes
//     the sources; Abandon stops waiting at once (the bridge is closing);
//   - fetch failures: logged once (Warn) with their recovery (Info), then
//     retried with a backoff from 100 ms doubling to 2 s;
//   - logging to the bridge's logger (the engine's Config.Logger).
//
// What a backend must implement is the Source interface and, optionally,
// Heartbeater; see bridge/README.md.
package consume
