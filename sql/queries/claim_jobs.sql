-- Claim up to $1 runnable jobs for daemon $2 (see importd_claim_jobs in migration 0005):
-- lock them (skipping rows other daemons hold), move them to running, count the attempt
-- and lease them until the job's timeout plus a margin ($5 seconds) has passed, so a
-- lease never ends while the job may still legitimately run. $3 / $4 restrict the queues /
-- kinds (NULL: all); $6 / $7 leave out queues / kinds that are claimed under a rate limit
-- of their own (NULL: none). A daemon always passes $4: the kinds it has handlers for (a
-- job of another kind stays pending for a daemon that serves it). run_at and created_at
-- come back within the years every client can hold (1 to 9999), whatever the row says.
SELECT j.id, j.kind, j.queue, j.tenant_id, j.payload, j.priority,
       least(greatest(j.run_at, timestamptz '0001-01-01 00:00:00+00'),
             timestamptz '9999-12-31 23:59:59+00') AS run_at,
       j.attempts, j.max_attempts, extract(epoch FROM j.timeout)::float8 AS timeout_s,
       j.locked_until, j.rows_done, j.rows_failed, j.rows_total,
       least(greatest(j.created_at, timestamptz '0001-01-01 00:00:00+00'),
             timestamptz '9999-12-31 23:59:59+00') AS created_at,
       j.checkpoint, extract(epoch FROM now() - j.run_at)::float8 AS waited_s
FROM public.importd_claim_jobs($1, $2, $3, $4, $5, $6, $7) AS j
