-- Inbox (package outbox, Inbox middleware): one row per message a consumer
-- group has processed, written in the handler's own transaction, so a
-- redelivered message has no second effect.

CREATE TABLE IF NOT EXISTS {{schema}}.inbox (
	message_id   text        NOT NULL,
	group_name   text        NOT NULL,
	processed_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (message_id, group_name)
);

CREATE INDEX IF NOT EXISTS inbox_processed ON {{schema}}.inbox (processed_at);
