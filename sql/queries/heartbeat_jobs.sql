-- Heartbeat of the jobs daemon $1 runs, one statement for all of them: store progress
-- and keep each lease at least lease_s seconds ahead. Fenced like every write of a run;
-- a job missing from the result has lost its lease (rescued, cancelled or deleted) and
-- the daemon must stop working on it.
WITH u AS (
    SELECT *
    FROM unnest($2::bigint[], $3::int[], $4::float8[], $5::bigint[], $6::bigint[],
                $7::bigint[], $8::bigint[])
         AS u(id, attempt, lease_s, rows_done, rows_total, rows_failed, bytes_read)
)
UPDATE public.import_jobs AS j
SET rows_done    = coalesce(u.rows_done, j.rows_done),
    rows_total   = coalesce(u.rows_total, j.rows_total),
    rows_failed  = coalesce(u.rows_failed, j.rows_failed),
    bytes_read   = coalesce(u.bytes_read, j.bytes_read),
    locked_until = greatest(j.locked_until, now() + make_interval(secs => u.lease_s)),
    updated_at   = now()
FROM u
WHERE j.id = u.id
  AND j.id = ANY ($2::bigint[])  -- lets the planner fetch just these rows by key
  -- coalesce (status is never NULL), as in finish_jobs.sql: the keys, not every entry
  -- of import_jobs_rescue_idx (each lease since the last vacuum), find the rows.
  AND coalesce(j.status, '') = 'running'
  AND j.locked_by = $1
  AND j.attempts = u.attempt
RETURNING j.id
