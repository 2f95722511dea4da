// Package deadletter is where messages go when they cannot be processed: a
// Record keeps the payload, every metadata value, where the message was
// going (topic, service, handler, consumer group) and why it failed (the
// final error and its kind, the attempts, first and last failure times).
//
// A Store lists records with filters and paging, returns one, deletes one
// (compare-and-delete, see below) and purges the records a filter matches;
// Replay publishes a record's message again to the group that failed it
// only (see TargetGroupKey) and removes the record.
//
// # Keys and versions
//
// A record's key is (MessageID, Group, Topic): one message's failed
// handling by one consumer group. Message ids are only unique per
// publisher, so the topic is part of the key: the same id on another topic
// is another message, and its dead letter does not overwrite the first.
// (Within a group, a topic has exactly one handler, so the key also names
// the handler; the topic is used because it is always set, and it is where
// a replay goes.)
//
// Put is idempotent on the key: the engine writes the record before it
// acknowledges the original message, so a crash between the two
// redelivers the message and the second Put updates the same record
// instead of adding a duplicate — never a loss.
//
// Every Put sets the record's Version: 1 when it adds the record, one more
// each time it updates it, in the same atomic step as the write. Delete
// takes the version its caller read and removes the record only if it is
// still at that version (ErrChanged otherwise).
//
// # The replay guarantee
//
// Replay reads the record (version V), publishes its message, then deletes
// the record only if it is still at version V. A replayed message that
// fails again is written by Put to the same key, so whatever the
// interleaving it ends in one of these states, never in neither:
//
//   - processed;
//   - failed again before the delete: Put updated the record to V+1, the
//     delete removes nothing, and the record holds the newest failure;
//   - failed again after the delete: Put adds a new record (new ID).
//
// If the publish fails, the record stays as it was. If the delete itself
// fails (the store is down) after a successful publish, the record stays
// too and Replay returns the error: the message may then be replayed
// twice, never lost. Like every redelivery, a replay is at least once: the
// handler must be idempotent.
//
// ReplayAll first lists the records matching its filter that last failed
// before it started, and only then replays each listed record once; it
// reports how many were replayed, failed to publish (kept) or were gone
// before their turn. A replayed message that fails again is written after
// the listing, so it is not replayed a second time: ReplayAll ends even
// when the handler keeps failing, and the time bound ends the listing even
// while new failures keep arriving.
//
// Stores: NewMemory (for the in-process bridge and tests) and, in
// deadletter/pgstore, PostgreSQL (its table is created by package
// migrations). Package deadletter/storetest is the conformance suite every
// Store implementation must pass.
package deadletter
