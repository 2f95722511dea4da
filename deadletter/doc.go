// Package deadletter is where messages go when they cannot be processed: a
// Record keeps the payload, every metadata value, where the message was
// going (topic, service, handler, consumer group) and why it failed (the
// final error and its kind, the attempts, first and last failure times).
//
// A Store lists records with filters and paging, returns one, deletes, and
// purges old ones; Replay publishes a record's message again to the group
// that failed it only (see TargetGroupKey) and removes the record.
//
// Put is idempotent on (MessageID, Group): the engine writes the record
// before it acknowledges the original message, so a crash between the two
// redelivers the message and the second Put updates the same record
// instead of adding a duplicate — never a loss.
//
// Stores: NewMemory (for the in-process bridge and tests) and, in
// deadletter/pgstore, PostgreSQL (its table is created by package
// migrations).
package deadletter
