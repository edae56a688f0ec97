-- For `importd doctor`: pending jobs by queue and kind (served by the partial index on
-- pending jobs).
SELECT queue, kind, count(*) AS n
FROM public.import_jobs
WHERE status = 'pending'
GROUP BY queue, kind
