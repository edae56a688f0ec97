-- For importd web's overview: jobs finished per minute and status over the last hour
-- (served by the index on finished_at; older history is never read). No status filter:
-- with one, a table not analysed yet is planned as a full scan.
SELECT extract(epoch FROM date_trunc('minute', finished_at))::float8 AS minute,
       status, count(*)::int AS n
FROM public.import_jobs
WHERE finished_at > now() - interval '1 hour'
GROUP BY 1, 2
ORDER BY 1
