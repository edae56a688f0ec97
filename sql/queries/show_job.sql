-- Every field of job $1, and how many row-level errors it has.
SELECT j.*, extract(epoch FROM j.timeout)::float8 AS timeout_s,
       (SELECT count(*) FROM public.import_job_errors AS e WHERE e.job_id = j.id) AS error_count
FROM public.import_jobs AS j
WHERE j.id = $1
