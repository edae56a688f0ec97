-- How many pending jobs are due now (for drain's progress).
SELECT count(*) FROM public.import_jobs WHERE status = 'pending' AND run_at <= now()
