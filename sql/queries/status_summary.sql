-- For `importd status`: the age of the oldest runnable job, and the table's size estimate.
SELECT extract(epoch FROM now() - (
           SELECT min(run_at) FROM public.import_jobs
           WHERE status = 'pending' AND run_at <= now()))::float8 AS oldest_runnable_s,
       (SELECT reltuples::bigint FROM pg_catalog.pg_class
        WHERE oid = 'public.import_jobs'::regclass) AS estimated_rows,
       now() AS at
