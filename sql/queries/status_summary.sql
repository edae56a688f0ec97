-- For `importd status`: the age of the oldest runnable job, and the table's size estimate:
-- the planner's (reltuples, -1 before the first ANALYZE) or the statistics' live-tuple
-- count, whichever is larger.
SELECT extract(epoch FROM now() - (
           SELECT min(run_at) FROM public.import_jobs
           WHERE status = 'pending' AND run_at <= now()))::float8 AS oldest_runnable_s,
       (SELECT greatest(c.reltuples::bigint, coalesce(s.n_live_tup, 0))
        FROM pg_catalog.pg_class AS c
        LEFT JOIN pg_catalog.pg_stat_all_tables AS s ON s.relid = c.oid
        WHERE c.oid = 'public.import_jobs'::regclass) AS estimated_rows,
       now() AS at
