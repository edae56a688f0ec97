-- Take over from the original pg_net design (run by `importd migrate` when
-- find_pg_net_design found its functions): drop those functions and, with them
-- (CASCADE), the trigger that called them, so no insert calls pg_net any more; rename
-- the design's own tables, with their indexes and sequences, to *_pg_net, keeping their
-- rows, so that migration 0001 creates importd's under the same names. importd's
-- functions and trigger (same names) come from the migrations that follow.
DO $$
DECLARE
    fn regprocedure;
    tbl text;
    dep record;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure
        FROM pg_catalog.pg_proc AS p
        WHERE p.pronamespace = 'public'::regnamespace
          AND p.proname IN ('notify_process_import_jobs_async', 'trigger_import_job_processing')
          AND (p.prosrc ~* '(net\.http_|http_post|pg_net)'
               OR (p.proname = 'notify_process_import_jobs_async' AND p.pronargs = 0)
               OR NOT EXISTS (SELECT 1 FROM public.importd_migrations WHERE version = 1))
    LOOP
        EXECUTE pg_catalog.format('DROP FUNCTION %s CASCADE', fn);
    END LOOP;
    IF EXISTS (SELECT 1 FROM public.importd_migrations WHERE version = 1) THEN
        RETURN;
    END IF;
    FOREACH tbl IN ARRAY ARRAY['import_job_errors', 'import_jobs'] LOOP
        CONTINUE WHEN pg_catalog.to_regclass('public.' || tbl) IS NULL;
        FOR dep IN
            SELECT c.relname, 'INDEX' AS what
            FROM pg_catalog.pg_index AS x
            JOIN pg_catalog.pg_class AS c ON c.oid = x.indexrelid
            WHERE x.indrelid = ('public.' || tbl)::regclass
            UNION ALL
            SELECT s.relname, 'SEQUENCE'
            FROM pg_catalog.pg_depend AS d
            JOIN pg_catalog.pg_class AS s ON s.oid = d.objid
            WHERE d.refobjid = ('public.' || tbl)::regclass AND s.relkind = 'S'
              AND d.deptype IN ('a', 'i')
        LOOP
            EXECUTE pg_catalog.format('ALTER %s public.%I RENAME TO %I', dep.what, dep.relname,
                                      left(dep.relname, 56) || '_pg_net');
        END LOOP;
        EXECUTE pg_catalog.format('ALTER TABLE public.%I RENAME TO %I', tbl, tbl || '_pg_net');
    END LOOP;
END
$$
