-- For importd web's job page: one page of a job's rejected rows, by source line.
SELECT line_number, message, raw_record, attempt
FROM public.import_job_errors
WHERE job_id = $1
ORDER BY line_number NULLS LAST, id
LIMIT $2 OFFSET $3
