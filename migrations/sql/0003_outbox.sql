-- Transactional outbox (package outbox): messages written in the caller's
-- transaction, forwarded to the broker by the relay after commit.

CREATE TABLE IF NOT EXISTS {{schema}}.outbox (
	-- Insertion order; the relay forwards in this order, so messages written
	-- one after another (in one transaction, or in transactions that commit
	-- one after another) reach the broker in the order they were written.
	id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	topic        text        NOT NULL,
	uuid         text        NOT NULL,
	payload      bytea       NOT NULL,
	metadata     jsonb       NOT NULL DEFAULT '{}',
	created_at   timestamptz NOT NULL DEFAULT now(),
	-- Set when the relay has published the message; the row is deleted once
	-- it is older than the relay's retention.
	forwarded_at timestamptz
);

CREATE INDEX IF NOT EXISTS outbox_pending ON {{schema}}.outbox (id) WHERE forwarded_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_forwarded ON {{schema}}.outbox (forwarded_at) WHERE forwarded_at IS NOT NULL;

-- Wake the relay when a transaction that wrote to the outbox commits
-- (notifications are delivered at commit, never for a rollback).
CREATE OR REPLACE FUNCTION {{schema}}.outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify(TG_TABLE_SCHEMA || '.outbox', '');
	RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS outbox_notify ON {{schema}}.outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON {{schema}}.outbox
	FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.outbox_notify();
