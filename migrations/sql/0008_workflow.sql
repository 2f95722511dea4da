-- Durable workflows (package workflow, issue 14). A run is a row; each step
-- it finished is a row of workflow_steps, written in one statement with the
-- check of the run's lease (its fencing token), so a worker that lost the
-- run can record nothing. The runners of every instance claim runnable runs
-- from workflow_runs (FOR UPDATE SKIP LOCKED), so a run survives any process
-- on any transport, the in-process one included.

CREATE TABLE IF NOT EXISTS {{schema}}.workflow_runs (
	-- The run id: given at Start (workflow.RunID) or a random UUID.
	id               text        PRIMARY KEY,
	-- "<service>.v<version>.<name>" of the workflow that runs it.
	workflow         text        NOT NULL,
	-- running, completed, failed (permanent failure, compensations run),
	-- cancelled (compensations run), stopped (history does not match the
	-- code, or a compensation could not run: nothing more is done until
	-- `switchboard workflow retry`).
	status           text        NOT NULL DEFAULT 'running',
	input            bytea       NOT NULL,
	output           bytea,
	-- The run's error as engine.Error JSON (code, reason, message, details).
	error            jsonb,
	-- Metadata captured at Start (correlation, traceparent, tenant,
	-- principal), given to every message the run sends.
	metadata         jsonb       NOT NULL DEFAULT '{}',
	cancel_requested boolean     NOT NULL DEFAULT false,
	-- When the run may next be claimed; NULL once finished or stopped.
	wake_at          timestamptz,
	-- The event and key an Await waits for (the event handler wakes the run).
	awaiting_event   text,
	awaiting_key     text,
	-- The lease: who runs it, until when, and the fencing token every
	-- checkpoint checks (incremented at each claim).
	owner            text,
	fence            bigint      NOT NULL DEFAULT 0,
	lease_until      timestamptz,
	-- How many times the run was claimed.
	claims           integer     NOT NULL DEFAULT 0,
	created_at       timestamptz NOT NULL DEFAULT now(),
	updated_at       timestamptz NOT NULL DEFAULT now(),
	finished_at      timestamptz
);

-- The runners' claim: runnable runs by wake time.
CREATE INDEX IF NOT EXISTS workflow_runnable ON {{schema}}.workflow_runs (wake_at)
	WHERE status = 'running' AND wake_at IS NOT NULL;
-- Listing (switchboard workflow list), newest first.
CREATE INDEX IF NOT EXISTS workflow_runs_created ON {{schema}}.workflow_runs (created_at DESC, id);
-- The runs an event may wake.
CREATE INDEX IF NOT EXISTS workflow_runs_awaiting ON {{schema}}.workflow_runs (awaiting_event, awaiting_key)
	WHERE status = 'running' AND awaiting_event IS NOT NULL;

CREATE TABLE IF NOT EXISTS {{schema}}.workflow_steps (
	run_id      text        NOT NULL REFERENCES {{schema}}.workflow_runs (id) ON DELETE CASCADE,
	-- Position in the run's history, from 1.
	seq         integer     NOT NULL,
	-- invoke, emit, step, sleep, await, compensate.
	kind        text        NOT NULL,
	-- The command's or event's topic, the step's name, the awaited
	-- "<event>/<key>"; checked against the code on replay.
	name        text        NOT NULL,
	-- The step's result (JSON), or its error (engine.Error JSON).
	result      bytea,
	error       jsonb,
	attempts    integer     NOT NULL DEFAULT 1,
	-- A sleep's or an await's due time.
	due_at      timestamptz,
	started_at  timestamptz NOT NULL,
	finished_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (run_id, seq)
);

-- Events an Await may want, by (event, key), kept whether or not a run
-- waits yet (an event that comes before the run reaches its Await is not
-- missed). Purged after the Store's SignalRetention.
CREATE TABLE IF NOT EXISTS {{schema}}.workflow_signals (
	event       text        NOT NULL,
	key         text        NOT NULL,
	message_id  text        NOT NULL,
	payload     bytea       NOT NULL,
	received_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (event, key, message_id)
);
CREATE INDEX IF NOT EXISTS workflow_signals_received ON {{schema}}.workflow_signals (received_at);

-- A run made runnable within a second wakes the runners at once.
CREATE OR REPLACE FUNCTION {{schema}}.workflow_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.status = 'running' AND NEW.wake_at IS NOT NULL
		AND NEW.wake_at < clock_timestamp() + interval '1 second'
		AND (NEW.lease_until IS NULL OR NEW.lease_until <= clock_timestamp()) THEN
		PERFORM pg_notify('workflow_' || md5(TG_TABLE_SCHEMA), '');
	END IF;
	RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS workflow_notify ON {{schema}}.workflow_runs;
CREATE TRIGGER workflow_notify AFTER INSERT OR UPDATE OF wake_at, lease_until, status ON {{schema}}.workflow_runs
	FOR EACH ROW EXECUTE FUNCTION {{schema}}.workflow_notify();
