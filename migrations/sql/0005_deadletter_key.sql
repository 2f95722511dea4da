-- Dead letters (package deadletter/pgstore), second version of the table.
--
-- The key becomes (message_id, group_name, topic): message ids are only
-- unique per publisher, so the same id on another topic is another message,
-- and its dead letter must not overwrite the first one's. Within a group a
-- topic has one handler, so the key names one failed handling.
--
-- version counts the writes of a row (1 on insert, +1 on every Put that
-- updates it). Replay deletes a record only if its version is still the one
-- it read: a replayed message that fails again before the delete keeps its
-- new failure instead of losing it.

ALTER TABLE {{schema}}.dead_letters ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 1;

CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_key ON {{schema}}.dead_letters (message_id, group_name, topic);

-- The constraint of version 2, named by PostgreSQL's rule <table>_<columns>_key.
ALTER TABLE {{schema}}.dead_letters DROP CONSTRAINT IF EXISTS dead_letters_message_id_group_name_key;
