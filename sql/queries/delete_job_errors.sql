-- Forget job $1's row-level errors (an import starting again from the top).
DELETE FROM public.import_job_errors WHERE job_id = $1
