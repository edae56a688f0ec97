-- How many row-level errors job $1 has recorded (for its counters when it fails).
SELECT count(*) FROM public.import_job_errors WHERE job_id = $1
