-- For importd web's overview: jobs completed and failed per minute over the last hour
-- (served by the index on finished_at; older history is never read).
SELECT extract(epoch FROM date_trunc('minute', finished_at))::float8 AS minute,
       status, count(*)::int AS n
FROM public.import_jobs
WHERE finished_at > now() - interval '1 hour' AND status IN ('completed', 'failed')
GROUP BY 1, 2
ORDER BY 1
