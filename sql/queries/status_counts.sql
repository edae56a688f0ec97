-- For `importd status`: unfinished jobs by queue, kind and status (served by the partial
-- indexes on pending and running), and jobs that ended in the last hour (served by the
-- index on finished_at). Finished history is never scanned whole.
SELECT queue, kind, status, count(*) AS n, false AS recent
FROM public.import_jobs
WHERE status = 'pending'
GROUP BY queue, kind, status
UNION ALL
SELECT queue, kind, status, count(*), false
FROM public.import_jobs
WHERE status = 'running'
GROUP BY queue, kind, status
UNION ALL
SELECT queue, kind, status, count(*), true
FROM public.import_jobs
WHERE finished_at > now() - interval '1 hour'
GROUP BY queue, kind, status
