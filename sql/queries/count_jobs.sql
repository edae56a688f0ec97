-- Pending and running jobs by queue, for the metrics gauges (served by the partial
-- indexes on those two statuses).
SELECT queue, status, count(*) AS n
FROM public.import_jobs
WHERE status IN ('pending', 'running')
GROUP BY queue, status
