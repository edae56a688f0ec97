-- A running job's heartbeat: store its progress and make sure the lease outlasts the
-- moment now + $4 seconds. Fenced like every write of a run; no row back means the lease
-- is lost (rescued, cancelled or deleted) and the daemon must stop working on the job.
UPDATE public.import_jobs
SET rows_done    = coalesce($5, rows_done),
    rows_total   = coalesce($6, rows_total),
    rows_failed  = coalesce($7, rows_failed),
    bytes_read   = coalesce($8, bytes_read),
    locked_until = greatest(locked_until, now() + make_interval(secs => $4::float8)),
    updated_at   = now()
WHERE id = $1
  AND status = 'running'
  AND locked_by = $2
  AND attempts = $3
RETURNING locked_until
