-- Outbox and inbox, second version (package outbox).

-- Failed rows. A row the broker refused for a reason that can pass
-- (unreachable, no consumer yet) is retried at retry_at, with a growing
-- backoff, and holds back the later rows of its topic only; a row it refused
-- for what the message is (too large) is parked: never retried until an
-- operator retries it (outbox.Retry, `switchboard outbox retry`), holding
-- back nothing.
ALTER TABLE {{schema}}.outbox
	ADD COLUMN IF NOT EXISTS attempts   integer NOT NULL DEFAULT 0,
	ADD COLUMN IF NOT EXISTS retry_at   timestamptz,
	ADD COLUMN IF NOT EXISTS parked_at  timestamptz,
	ADD COLUMN IF NOT EXISTS last_error text;

-- The rows waiting for a retry, by topic: the relay looks up whether an
-- earlier row of the same topic waits.
CREATE INDEX IF NOT EXISTS outbox_retrying ON {{schema}}.outbox (topic, id)
	WHERE forwarded_at IS NULL AND parked_at IS NULL AND retry_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS outbox_parked ON {{schema}}.outbox (id)
	WHERE forwarded_at IS NULL AND parked_at IS NOT NULL;

-- The commit notification's channel: a hash of the schema name, because
-- the name itself plus ".outbox" exceeds PostgreSQL's 63-byte identifier
-- limit for schema names of 57 bytes and more (pg_notify then fails, and
-- with it every outbox write). outbox.notifyChannel computes the same name.
CREATE OR REPLACE FUNCTION {{schema}}.outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('outbox_' || md5(TG_TABLE_SCHEMA), '');
	RETURN NULL;
END $$;

-- Relay leadership: a lease renewed by the leader, instead of a session
-- advisory lock, which stays held as long as the server believes the
-- leader's session alive (forever, behind a frozen network path). A standby
-- takes over when the lease expired, or at once when the session that last
-- renewed it (pid, backend_start) has ended (a relay killed or cut off).
CREATE TABLE IF NOT EXISTS {{schema}}.outbox_leader (
	-- One row: the lease of this schema's outbox.
	id            boolean     PRIMARY KEY DEFAULT true CHECK (id),
	holder        text        NOT NULL,
	expires_at    timestamptz NOT NULL,
	pid           integer     NOT NULL,
	backend_start timestamptz
);

-- Inbox: a message is identified by its id AND its topic (a producer may
-- reuse an id on another topic). Rows recorded before this version have the
-- topic '' and still match any topic, until PurgeInbox removes them.
ALTER TABLE {{schema}}.inbox ADD COLUMN IF NOT EXISTS topic text NOT NULL DEFAULT '';
ALTER TABLE {{schema}}.inbox DROP CONSTRAINT IF EXISTS inbox_pkey;
ALTER TABLE {{schema}}.inbox ADD PRIMARY KEY (message_id, group_name, topic);

-- The handler's output (an awaited command's reply), stored in the
-- handler's transaction, so a redelivery is answered again.
ALTER TABLE {{schema}}.inbox ADD COLUMN IF NOT EXISTS reply jsonb;
