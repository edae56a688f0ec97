-- For `importd status`: the exact number of rows in import_jobs, run only when the
-- estimate says the table is small enough to count cheaply.
SELECT count(*) AS n FROM public.import_jobs
