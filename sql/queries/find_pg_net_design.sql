-- The original pg_net design's functions, if this database has them: the trigger and
-- notify functions of the names importd uses, whose bodies call pg_net (net.http_post),
-- that take no argument (importd's notify function takes the queue), or that exist before
-- importd's first migration created its own. With the tables
-- migration 0001 would create, when importd has not created them itself.
SELECT
    coalesce((SELECT array_agg(p.oid::regprocedure::text ORDER BY p.oid)
              FROM pg_catalog.pg_proc AS p
              WHERE p.pronamespace = 'public'::regnamespace
                AND p.proname IN ('notify_process_import_jobs_async',
                                  'trigger_import_job_processing')
                AND (p.prosrc ~* '(net\.http_|http_post|pg_net)'
                     OR (p.proname = 'notify_process_import_jobs_async'
                         AND p.pronargs = 0)
                     OR NOT EXISTS (SELECT 1 FROM public.importd_migrations
                                    WHERE version = 1))), '{}') AS functions,
    coalesce((SELECT array_agg(c.relname::text ORDER BY c.relname)
              FROM pg_catalog.pg_class AS c
              WHERE c.relnamespace = 'public'::regnamespace
                AND c.relkind IN ('r', 'p')
                AND c.relname IN ('import_jobs', 'import_job_errors')
                AND NOT EXISTS (SELECT 1 FROM public.importd_migrations WHERE version = 1)),
             '{}') AS tables
