-- importd web's live stream: everything an open page updates, in one small statement.
-- The running jobs (at most 200, from the partial index on running jobs), unfinished jobs
-- by queue and status (partial indexes), the oldest runnable job's wait, the newest job's
-- id (the primary key's last entry: a new job shows on the job list), and job $1.
SELECT
    (SELECT coalesce(json_agg(r), '[]') FROM (
        SELECT id, kind, queue, tenant_id, attempts, max_attempts, rows_done, rows_total,
               rows_failed, bytes_read, locked_by,
               extract(epoch FROM now() - started_at)::float8 AS elapsed_s,
               extract(epoch FROM locked_until - now())::float8 AS lease_left_s
        FROM public.import_jobs
        WHERE status = 'running'
        ORDER BY started_at
        LIMIT 200) AS r) AS running,
    (SELECT coalesce(json_agg(c), '[]') FROM (
        SELECT queue, status, count(*)::int AS n FROM public.import_jobs
        WHERE status = 'pending' GROUP BY queue, status
        UNION ALL
        SELECT queue, status, count(*)::int FROM public.import_jobs
        WHERE status = 'running' GROUP BY queue, status) AS c) AS counts,
    extract(epoch FROM now() - (
        SELECT min(run_at) FROM public.import_jobs
        WHERE status = 'pending' AND run_at <= now()))::float8 AS oldest_runnable_s,
    (SELECT max(id) FROM public.import_jobs) AS last_id,
    (SELECT row_to_json(j) FROM (
        SELECT id, status, attempts, max_attempts, rows_done, rows_total, rows_failed,
               bytes_read, last_error, locked_by,
               extract(epoch FROM locked_until - now())::float8 AS lease_left_s
        FROM public.import_jobs WHERE id = $1) AS j) AS job
