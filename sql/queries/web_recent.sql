-- For importd web's overview: jobs finished in the last hour by minute, queue and status
-- (served by the index on finished_at; older history is never read). Both the per-queue
-- counts and the per-minute chart come from this one read. No status filter: with one, a
-- table not analysed yet is planned as a full scan.
SELECT extract(epoch FROM date_trunc('minute', finished_at))::float8 AS minute,
       queue, status, count(*)::int AS n
FROM public.import_jobs
WHERE finished_at > now() - interval '1 hour'
GROUP BY 1, 2, 3
