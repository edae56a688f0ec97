-- Return jobs whose lease expired (their daemon died or lost the database for longer than
-- the job's timeout) to pending, or to failed when that was their last attempt. The
-- attempt stays counted: a job that kills its daemon must not loop for ever. SKIP LOCKED
-- and the status test make it safe for every daemon to run at once.
WITH expired AS (
    SELECT id, locked_by AS lost_by
    FROM public.import_jobs
    WHERE status = 'running'
      AND locked_until < now()
    ORDER BY locked_until
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE public.import_jobs AS j
SET status       = CASE WHEN j.attempts >= j.max_attempts THEN 'failed' ELSE 'pending' END,
    run_at       = clock_timestamp(),
    last_error   = format('LeaseExpired: daemon %s stopped renewing the lease of attempt %s/%s',
                          expired.lost_by, j.attempts, j.max_attempts),
    locked_by    = NULL,
    locked_until = NULL,
    finished_at  = CASE WHEN j.attempts >= j.max_attempts THEN clock_timestamp() END,
    updated_at   = clock_timestamp()
FROM expired
WHERE j.id = expired.id
RETURNING j.id, j.kind, j.queue, j.tenant_id, j.attempts, j.status, expired.lost_by
