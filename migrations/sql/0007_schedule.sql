-- Scheduled messages and recurring schedules (package outbox, issue 15).
-- A scheduled message is an outbox row with a due time: the relay that
-- forwards the outbox forwards it once due, under the same lease, so one
-- store, one timer and one leader serve both.

-- When the row is due; NULL: at once (every row written before this
-- version, and every row written without "scheduled_for").
ALTER TABLE {{schema}}.outbox ADD COLUMN IF NOT EXISTS deliver_at timestamptz;

-- The rows to forward at once, in id order. outbox_pending also held the
-- scheduled rows, so the relay's id-ordered scan would step over every
-- future row on each round; this index holds only the immediate ones.
CREATE INDEX IF NOT EXISTS outbox_immediate ON {{schema}}.outbox (id)
	WHERE forwarded_at IS NULL AND deliver_at IS NULL;
DROP INDEX IF EXISTS {{schema}}.outbox_pending;

-- The scheduled rows still to forward, by due time: the relay reads the
-- due ones (deliver_at <= now()) from its start, and the next due time
-- (min(deliver_at) after now) from one entry, to sleep until then.
CREATE INDEX IF NOT EXISTS outbox_due ON {{schema}}.outbox (deliver_at, id)
	WHERE forwarded_at IS NULL AND parked_at IS NULL AND deliver_at IS NOT NULL;

-- A scheduled message is cancelled and moved by its id (uuid), which must
-- be unique among those still waiting: a second Schedule of the same id is
-- refused, and a recurring schedule's tick (its id derived from the name
-- and the tick's time) is written once.
CREATE UNIQUE INDEX IF NOT EXISTS outbox_scheduled_uuid ON {{schema}}.outbox (uuid)
	WHERE forwarded_at IS NULL AND deliver_at IS NOT NULL;

-- Recurring schedules, declared by name (engine.Recurrence). The leading
-- relay writes each tick's message to the outbox (deliver_at = the tick)
-- and advances next_at in the same transaction, so a tick is written once
-- whichever relay leads and whatever dies when.
CREATE TABLE IF NOT EXISTS {{schema}}.outbox_recurring (
	name       text        PRIMARY KEY,
	-- Cron expression (internal/cronspec).
	spec       text        NOT NULL,
	-- The message each tick publishes a copy of.
	topic      text        NOT NULL,
	payload    bytea       NOT NULL,
	metadata   jsonb       NOT NULL DEFAULT '{}',
	-- engine.CatchUp: 0 one message for the missed ticks, 1 none, 2 one each.
	catch_up   integer     NOT NULL DEFAULT 0,
	-- The next tick to write; NULL when the spec has no further tick.
	next_at    timestamptz,
	updated_at timestamptz NOT NULL DEFAULT now()
);

-- The relay's next recurring tick, read from one entry.
CREATE INDEX IF NOT EXISTS outbox_recurring_next ON {{schema}}.outbox_recurring (next_at)
	WHERE next_at IS NOT NULL;

-- The commit notification only for rows the relay must look at soon: a
-- row to forward at once, or due within a second of its writing. The relay
-- sweeps every PollInterval (1 s by default) and sleeps no longer than
-- until the next due row it knows of, so it reads a row due later before
-- it is due without being woken (unless its transaction commits more than
-- a second after writing it: then up to PollInterval late); and a
-- notification costs every notifying commit a database-wide lock at
-- commit, which held scheduling to about 1,600 messages/s with eight
-- writers.
CREATE OR REPLACE FUNCTION {{schema}}.outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF EXISTS (SELECT FROM new_rows WHERE deliver_at IS NULL OR deliver_at < clock_timestamp() + interval '1 second') THEN
		PERFORM pg_notify('outbox_' || md5(TG_TABLE_SCHEMA), '');
	END IF;
	RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS outbox_notify ON {{schema}}.outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON {{schema}}.outbox
	REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.outbox_notify();
