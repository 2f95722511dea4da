-- Dead letters (package deadletter/pgstore): one row per message a consumer
-- group could not process, kept until it is replayed, deleted or purged.

CREATE TABLE IF NOT EXISTS {{schema}}.dead_letters (
	id              uuid        PRIMARY KEY,
	message_id      text        NOT NULL,
	topic           text        NOT NULL,
	service         text        NOT NULL,
	handler         text        NOT NULL,
	group_name      text        NOT NULL,
	payload         bytea       NOT NULL,
	metadata        jsonb       NOT NULL DEFAULT '{}',
	error           text        NOT NULL,
	error_kind      text        NOT NULL,
	attempts        integer     NOT NULL,
	first_failed_at timestamptz NOT NULL,
	last_failed_at  timestamptz NOT NULL,
	-- Put is an upsert on this pair: a message redelivered after a crash
	-- between Put and Ack updates its record instead of adding another.
	UNIQUE (message_id, group_name)
);

-- List pages in (last_failed_at, id) order; unfiltered lists, the time
-- filters and PurgeBefore use this index.
CREATE INDEX IF NOT EXISTS dead_letters_order ON {{schema}}.dead_letters (last_failed_at, id);

-- The usual filters: by service (and handler), and by topic, each keeping
-- the paging order. The error-text filter scans the rows the others select.
CREATE INDEX IF NOT EXISTS dead_letters_service ON {{schema}}.dead_letters (service, handler, last_failed_at, id);
CREATE INDEX IF NOT EXISTS dead_letters_topic ON {{schema}}.dead_letters (topic, last_failed_at, id);
