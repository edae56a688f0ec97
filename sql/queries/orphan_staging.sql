-- Staging tables whose job is finished or gone: left behind by a daemon that died on the
-- job's last attempt. Returns the DROP statements, names quoted by format('%I').
SELECT pg_catalog.format('DROP TABLE IF EXISTS importd_staging.%I', c.relname) AS statement
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = 'importd_staging'
  AND c.relkind = 'r'
  AND c.relname ~ '^job_[0-9]+(_[0-9]+)?$'
  AND NOT EXISTS (
      SELECT 1 FROM public.import_jobs AS j
      WHERE j.id = substring(c.relname FROM '^job_([0-9]+)')::bigint
        AND j.status IN ('pending', 'running'))
