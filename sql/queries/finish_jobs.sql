-- End a batch of runs written by daemon $1, one row per job. Fenced: a row only changes
-- while it is still running under this daemon's lease for the same attempt, so a job that
-- was rescued (and perhaps claimed again) can never be ended twice.
--   status: completed | failed | pending (retry after delay_s) | cancelled
--   refund: 1 gives the attempt back (interrupted by shutdown, not the job's fault)
-- Times are the moment of the write (clock_timestamp()), not the start of the
-- transaction: an atomic import completes in its own, long transaction.
-- A completed job keeps no error: an earlier attempt's last_error is cleared.
-- $9..$12: progress the handler reported that no heartbeat wrote (NULL: keep the row's).
WITH u AS (
    SELECT *
    FROM unnest($2::bigint[], $3::int[], $4::text[], $5::text[], $6::text[],
                $7::float8[], $8::int[], $9::bigint[], $10::bigint[], $11::bigint[],
                $12::bigint[])
         AS u(id, attempt, status, result, last_error, delay_s, refund,
              rows_done, rows_total, rows_failed, bytes_read)
)
UPDATE public.import_jobs AS j
SET status       = u.status,
    result       = coalesce(u.result::jsonb, j.result),
    last_error   = CASE WHEN u.status = 'completed' THEN NULL ELSE u.last_error END,
    attempts     = j.attempts - u.refund,
    run_at       = CASE WHEN u.status = 'pending'
                        THEN clock_timestamp() + make_interval(secs => u.delay_s)
                        ELSE j.run_at END,
    rows_done    = coalesce(u.rows_done, j.rows_done),
    rows_total   = coalesce(u.rows_total, j.rows_total),
    rows_failed  = coalesce(u.rows_failed, j.rows_failed),
    bytes_read   = coalesce(u.bytes_read, j.bytes_read),
    locked_by    = NULL,
    locked_until = NULL,
    finished_at  = CASE WHEN u.status = 'pending' THEN NULL ELSE clock_timestamp() END,
    updated_at   = clock_timestamp()
FROM u
WHERE j.id = u.id
  AND j.id = ANY ($2::bigint[])  -- lets the planner fetch just these rows by key
  -- coalesce (status is never NULL): "status = 'running'" would let the planner, on a
  -- table without statistics, AND the keys' bitmap with one of import_jobs_rescue_idx,
  -- whose entries (every lease since the last vacuum) a drain keeps adding to: each
  -- write read them all (0.26 ms for 16 rows at the start of a drain of 20,000 jobs,
  -- 0.51 ms at its end). Fetched by key and filtered, a write reads its own rows.
  AND coalesce(j.status, '') = 'running'
  AND j.locked_by = $1
  AND j.attempts = u.attempt
RETURNING j.id
