-- The importd table that relation $1.$2 is, or reaches as a view (through any chain of
-- views): import_jobs, import_job_errors, an importd_* table, or anything in a schema
-- named importd or importd_*. NULL when it reaches none (or does not exist).
WITH RECURSIVE reach (oid, depth) AS (
    SELECT pg_catalog.to_regclass(pg_catalog.format('%I.%I', $1::text, $2::text))::oid, 0
  UNION
    SELECT d.refobjid, r.depth + 1
    FROM reach AS r
    JOIN pg_catalog.pg_rewrite AS w ON w.ev_class = r.oid
    JOIN pg_catalog.pg_depend AS d
      ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
     AND d.objid = w.oid
     AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
     AND d.refobjid <> r.oid
    WHERE r.depth < 32
)
SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) AS own
FROM reach AS r
JOIN pg_catalog.pg_class AS c ON c.oid = r.oid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE lower(c.relname) IN ('import_jobs', 'import_job_errors')
   OR lower(c.relname) LIKE 'importd\_%'
   OR lower(n.nspname) = 'importd'
   OR lower(n.nspname) LIKE 'importd\_%'
LIMIT 1
