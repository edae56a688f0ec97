-- For `importd status`: the jobs running now, with their progress (at most $1).
SELECT id, kind, queue, tenant_id, attempts, max_attempts, rows_done, rows_total,
       rows_failed, bytes_read, locked_by,
       extract(epoch FROM now() - started_at)::float8 AS elapsed_s,
       extract(epoch FROM locked_until - now())::float8 AS lease_left_s
FROM public.import_jobs
WHERE status = 'running'
ORDER BY started_at
LIMIT $1
