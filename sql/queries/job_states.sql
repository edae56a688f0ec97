-- The status of each of the jobs $1 that exists (for the reasons retry and cancel give).
SELECT id, status
FROM public.import_jobs
WHERE id = ANY ($1::bigint[])
