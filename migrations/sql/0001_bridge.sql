-- The PostgreSQL bridge (package bridge/postgres): consumer groups, the
-- message queue, and the function its publish statement raises through.
-- Written with IF NOT EXISTS / OR REPLACE: schemas created by releases
-- before versioned migrations already hold these objects, and applying this
-- version over them records it without changing anything.

-- One row per consumer group of a topic. A Subscriber registers its group
-- here; Publish copies each message to every group of the topic.
CREATE TABLE IF NOT EXISTS {{schema}}.bridge_groups (
	id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	topic      text        NOT NULL,
	name       text        NOT NULL,
	kind       text        NOT NULL CHECK (kind IN ('command', 'event', 'reply')),
	created_at timestamptz NOT NULL DEFAULT now(),
	seen_at    timestamptz NOT NULL DEFAULT now(),
	UNIQUE (topic, name)
);

-- One row per (message, group) still to be processed. visible_at is when the
-- row may next be claimed: publish time, then lease expiry (ack deadline)
-- while a consumer holds it, then now+nack_delay after a Nack. Ack deletes
-- the row.
CREATE TABLE IF NOT EXISTS {{schema}}.bridge_queue (
	id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	group_id     bigint      NOT NULL REFERENCES {{schema}}.bridge_groups (id) ON DELETE CASCADE,
	uuid         text        NOT NULL,
	payload      bytea       NOT NULL,
	metadata     jsonb       NOT NULL DEFAULT '{}',
	published_at timestamptz NOT NULL DEFAULT now(),
	visible_at   timestamptz NOT NULL DEFAULT now(),
	attempts     integer     NOT NULL DEFAULT 0
);

-- Serves the claim (group_id = ? AND visible_at <= now() ORDER BY
-- visible_at, id), the next-visible probe, and the FK cascade.
CREATE INDEX IF NOT EXISTS bridge_queue_next ON {{schema}}.bridge_queue (group_id, visible_at, id);

-- Raises the error the publish statement uses to report "no consumer group
-- for this topic" with a recognisable SQLSTATE (SB404, which bridge/postgres
-- matches). Plain SQL cannot raise, and the check must live in the statement
-- so that it also holds when the statement runs inside a caller's
-- transaction.
CREATE OR REPLACE FUNCTION {{schema}}.bridge_no_subscriber(topic text) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
	RAISE EXCEPTION USING
		ERRCODE = 'SB404',
		MESSAGE = format('switchboard: no subscriber for topic %s', topic);
END
$fn$;
