-- The original design's verification queries, in one: the trigger on import_jobs with its
-- state and function, and both functions with SECURITY DEFINER and their settings; and
-- importd.notify as this session sees it (database and role defaults included).
SELECT current_setting('importd.notify', true) AS notify_setting,
       (SELECT t.tgenabled::text
        FROM pg_catalog.pg_trigger AS t
        JOIN pg_catalog.pg_class AS c ON t.tgrelid = c.oid
        JOIN pg_catalog.pg_proc AS p ON t.tgfoid = p.oid
        WHERE c.relname = 'import_jobs' AND t.tgname = 'trigger_process_import_jobs'
          AND p.proname = 'trigger_import_job_processing') AS trigger_enabled,
       coalesce((SELECT pg_catalog.jsonb_object_agg(p.proname, pg_catalog.jsonb_build_object(
                    'security_definer', p.prosecdef,
                    'search_path', EXISTS (SELECT 1 FROM unnest(p.proconfig) AS c
                                           WHERE c LIKE 'search_path=%')))
                 FROM pg_catalog.pg_proc AS p
                 WHERE p.proname IN ('notify_process_import_jobs_async',
                                     'trigger_import_job_processing')), '{}') AS functions
