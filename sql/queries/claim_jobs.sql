-- Claim up to $1 runnable jobs for daemon $2 in one statement: lock them (skipping rows
-- other daemons hold), move them to running, count the attempt and lease them until the
-- job's timeout plus a margin ($5 seconds) has passed, so a lease never ends while the
-- job may still legitimately run. $3 / $4 restrict the queues / kinds (NULL: all); $6 / $7
-- leave out queues / kinds that are claimed under a rate limit of their own (NULL: none).
-- A daemon always passes $4: the kinds it has handlers for (a job of another kind stays
-- pending for a daemon that serves it). run_at and created_at come back within the years
-- every client can hold (1 to 9999), whatever the row says.
WITH next AS (
    SELECT id
    FROM public.import_jobs
    WHERE status = 'pending'
      AND run_at <= now()
      AND ($3::text[] IS NULL OR queue = ANY ($3::text[]))
      AND ($4::text[] IS NULL OR kind = ANY ($4::text[]))
      AND ($6::text[] IS NULL OR queue <> ALL ($6::text[]))
      AND ($7::text[] IS NULL OR kind <> ALL ($7::text[]))
    ORDER BY priority, run_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE public.import_jobs AS j
SET status       = 'running',
    attempts     = j.attempts + 1,
    locked_by    = $2,
    locked_until = now() + j.timeout + make_interval(secs => $5::float8),
    started_at   = now(),
    updated_at   = now()
FROM next
WHERE j.id = next.id
RETURNING j.id, j.kind, j.queue, j.tenant_id, j.payload, j.priority,
          least(greatest(j.run_at, timestamptz '0001-01-01 00:00:00+00'),
                timestamptz '9999-12-31 23:59:59+00') AS run_at,
          j.attempts, j.max_attempts, extract(epoch FROM j.timeout)::float8 AS timeout_s,
          j.locked_until, j.rows_done, j.rows_failed, j.rows_total,
          least(greatest(j.created_at, timestamptz '0001-01-01 00:00:00+00'),
                timestamptz '9999-12-31 23:59:59+00') AS created_at,
          j.checkpoint, extract(epoch FROM now() - j.run_at)::float8 AS waited_s
