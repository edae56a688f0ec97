-- End a batch of runs written by daemon $1 that all completed, one row per job: what
-- finish_jobs.sql writes for status 'completed' (the same fence: a row only changes while
-- it is still running under this daemon's lease for the same attempt), sent as three
-- arrays instead of seven. A drain of short jobs writes almost only such batches.
-- A completed job keeps no error: an earlier attempt's last_error is cleared.
WITH u AS (
    SELECT *
    FROM unnest($2::bigint[], $3::int[], $4::text[]) AS u(id, attempt, result)
)
UPDATE public.import_jobs AS j
SET status       = 'completed',
    result       = coalesce(u.result::jsonb, j.result),
    last_error   = NULL,
    locked_by    = NULL,
    locked_until = NULL,
    finished_at  = clock_timestamp(),
    updated_at   = clock_timestamp()
FROM u
WHERE j.id = u.id
  AND j.id = ANY ($2::bigint[])  -- lets the planner fetch just these rows by key
  AND j.status = 'running'
  AND j.locked_by = $1
  AND j.attempts = u.attempt
RETURNING j.id
