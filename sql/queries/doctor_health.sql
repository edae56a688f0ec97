-- Numbers `importd doctor` judges: server version, NOTIFY queue usage, the server's
-- clock, jobs stuck running past their lease, and dead tuples of import_jobs.
SELECT current_setting('server_version_num')::int AS version_num,
       current_setting('server_version') AS version,
       pg_catalog.pg_notification_queue_usage() AS queue_usage,
       extract(epoch FROM clock_timestamp())::float8 AS server_epoch,
       (SELECT count(*) FROM public.import_jobs
        WHERE status = 'running' AND locked_until < now() - interval '60 seconds') AS stuck,
       coalesce((SELECT n_dead_tup FROM pg_catalog.pg_stat_user_tables
                 WHERE relid = 'public.import_jobs'::regclass), 0) AS dead,
       coalesce((SELECT n_live_tup FROM pg_catalog.pg_stat_user_tables
                 WHERE relid = 'public.import_jobs'::regclass), 0) AS live
