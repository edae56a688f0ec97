-- Row-level errors of job $1 by source line; at most $2 (NULL: all).
SELECT line_number, message, raw_record, attempt, created_at
FROM public.import_job_errors
WHERE job_id = $1
ORDER BY line_number NULLS LAST, id
LIMIT $2
