package workflow

// queries are the runner's statements on one schema. Every statement that
// writes on behalf of a run checks the run's fencing token ($2) in the same
// statement: a runner that lost the run changes nothing.
type queries struct {
	insertRun, insertClaimed, runWorkflow, waitRun      string
	claim, history                                      string
	checkpoint, suspend, resolve                        string
	renew, release, finish, stop                        string
	lock, signalFor, awaitSuspend, signal, purgeSignals string
}

func newQueries(s string) queries {
	runs, steps, signals := s+".workflow_runs", s+".workflow_steps", s+".workflow_signals"
	// fenced is the CTE that renews the lease and checks the fence.
	const interval = `$3 * interval '1 microsecond'`
	fenced := `WITH r AS (UPDATE ` + runs + ` SET lease_until = now() + ` + interval + `, updated_at = now()
		WHERE id = $1 AND fence = $2 AND status = 'running' RETURNING id, cancel_requested) `
	return queries{
		insertRun: `INSERT INTO ` + runs + ` (id, workflow, input, metadata, wake_at) VALUES ($1, $2, $3, $4, now())
			ON CONFLICT (id) DO NOTHING`,
		// insertClaimed inserts a run claimed by owner $5, with a lease of
		// $6 µs, and returns the database's clock.
		insertClaimed: `INSERT INTO ` + runs + ` (id, workflow, input, metadata, wake_at, owner, lease_until, fence, claims)
			VALUES ($1, $2, $3, $4, now(), $5, now() + $6 * interval '1 microsecond', 1, 1)
			ON CONFLICT (id) DO NOTHING RETURNING now()`,
		// runWorkflow and waitRun read the tenant captured at Start too: a
		// run id is scoped to its tenant.
		runWorkflow: `SELECT workflow, coalesce(metadata->>'tenant_id', '') FROM ` + runs + ` WHERE id = $1`,
		waitRun:     `SELECT workflow, coalesce(metadata->>'tenant_id', ''), status, output, error FROM ` + runs + ` WHERE id = $1`,
		// claim takes up to $2 runnable runs of the workflows $1 for owner
		// $3 with a lease of $4 µs, and returns them, then a last row with
		// the delay until the next run this runner could claim (NULL: none).
		claim: `WITH c AS (
				SELECT id FROM ` + runs + `
				WHERE status = 'running' AND wake_at <= now() AND (lease_until IS NULL OR lease_until <= now())
					AND workflow = ANY($1)
				ORDER BY wake_at LIMIT $2 FOR UPDATE SKIP LOCKED),
			u AS (
				UPDATE ` + runs + ` r SET owner = $3, lease_until = now() + $4 * interval '1 microsecond',
					fence = r.fence + 1, claims = r.claims + 1, updated_at = now()
				FROM c WHERE r.id = c.id
				RETURNING r.id, r.workflow, r.input, r.metadata, r.fence, r.cancel_requested)
			SELECT id, workflow, input, metadata, fence, cancel_requested, now(), NULL::float8 FROM u
			UNION ALL
			SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL,
				(SELECT extract(epoch FROM min(greatest(wake_at, coalesce(lease_until, wake_at))) - now())::float8
				FROM ` + runs + `
				WHERE status = 'running' AND wake_at IS NOT NULL AND workflow = ANY($1)
					AND id NOT IN (SELECT id FROM c))`,
		history: `SELECT run_id, seq, kind, name, result, error, attempts, due_at FROM ` + steps + `
			WHERE run_id = ANY($1) ORDER BY run_id, seq`,
		// checkpoint records step $4 and renews the lease, in one statement.
		checkpoint: fenced + `INSERT INTO ` + steps + ` (run_id, seq, kind, name, result, error, attempts, due_at, started_at)
			SELECT r.id, $4, $5, $6, $7, $8, $9, $10, $11 FROM r RETURNING (SELECT cancel_requested FROM r)`,
		// suspend records step $4 (a sleep) and gives the run back until
		// its due time $10 — or at once when a cancel came since the last
		// checkpoint, so that the cancel is seen now, not when it wakes.
		suspend: `WITH r AS (UPDATE ` + runs + ` SET owner = NULL, lease_until = NULL,
					wake_at = CASE WHEN cancel_requested THEN now() ELSE $10::timestamptz END, updated_at = now()
				WHERE id = $1 AND fence = $2 AND status = 'running' AND $3::bigint IS NOT NULL RETURNING id)
			INSERT INTO ` + steps + ` (run_id, seq, kind, name, result, error, attempts, due_at, started_at)
			SELECT r.id, $4, $5, $6, $7, $8, $9, $10, $11 FROM r`,
		// resolve completes the await recorded at $4.
		resolve: `WITH r AS (UPDATE ` + runs + ` SET lease_until = now() + ` + interval + `, updated_at = now(),
					awaiting_event = NULL, awaiting_key = NULL
				WHERE id = $1 AND fence = $2 AND status = 'running' RETURNING id, cancel_requested)
			UPDATE ` + steps + ` st SET result = $5, error = $6, finished_at = now()
			FROM r WHERE st.run_id = r.id AND st.seq = $4 RETURNING r.cancel_requested`,
		// renew leaves alone a run given back (a suspended one); it returns
		// cancel_requested.
		renew: `UPDATE ` + runs + ` SET lease_until = now() + $3 * interval '1 microsecond'
			WHERE id = $1 AND fence = $2 AND status = 'running' AND lease_until IS NOT NULL RETURNING cancel_requested`,
		release: `UPDATE ` + runs + ` SET owner = NULL, lease_until = NULL, wake_at = now() + $3 * interval '1 microsecond', updated_at = now()
			WHERE id = $1 AND fence = $2 AND status = 'running'`,
		finish: `UPDATE ` + runs + ` SET status = $3, output = $4, error = $5, owner = NULL, lease_until = NULL,
				wake_at = NULL, awaiting_event = NULL, awaiting_key = NULL, updated_at = now(), finished_at = now()
			WHERE id = $1 AND fence = $2 AND status = 'running'`,
		stop: `UPDATE ` + runs + ` SET status = 'stopped', error = $3, owner = NULL, lease_until = NULL,
				wake_at = NULL, awaiting_event = NULL, awaiting_key = NULL, updated_at = now()
			WHERE id = $1 AND fence = $2 AND status = 'running'`,
		// An await and the signal it waits for take the same transaction
		// lock, so that a signal stored while the run suspends is seen by
		// one side or the other (see doc.go, "Await").
		lock:      `SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 0))`,
		signalFor: `SELECT payload FROM ` + signals + ` WHERE event = $1 AND key = $2 ORDER BY received_at, message_id LIMIT 1`,
		awaitSuspend: `UPDATE ` + runs + ` SET owner = NULL, lease_until = NULL,
				wake_at = CASE WHEN cancel_requested THEN now() ELSE $3::timestamptz END, updated_at = now(),
				awaiting_event = $4, awaiting_key = $5
			WHERE id = $1 AND fence = $2 AND status = 'running'`,
		signal: `WITH i AS (INSERT INTO ` + signals + ` (event, key, message_id, payload) VALUES ($1, $2, $3, $4)
				ON CONFLICT DO NOTHING)
			UPDATE ` + runs + ` SET wake_at = now(), updated_at = now()
			WHERE status = 'running' AND awaiting_event = $1 AND awaiting_key = $2`,
		purgeSignals: `DELETE FROM ` + signals + ` WHERE received_at < now() - $1 * interval '1 microsecond'`,
	}
}
