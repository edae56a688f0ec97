-- The importd table that relation $1.$2 is, or reaches as a view or as a table that
-- inherits from it (through any chain of views and parents): import_jobs,
-- import_job_errors, an importd_* table, or anything in a schema named importd or
-- importd_*. NULL when it reaches none (or does not exist). A child's rows are its
-- parents' (a scan of import_jobs reads them), so a child of one of importd's tables is
-- as much a forgery as a view on it.
-- This query is the gate itself: every function, operator and type is named with its
-- schema, so nothing on the role's search_path (an exact-match lower(name) or
-- =(oid, regclass) in public) can stand in for pg_catalog's.
WITH RECURSIVE reach (oid, depth) AS (
    SELECT pg_catalog.to_regclass(
               pg_catalog.format('%I.%I', $1::pg_catalog.text, $2::pg_catalog.text)
           )::pg_catalog.oid,
           0
  UNION
    SELECT next.oid, r.depth OPERATOR(pg_catalog.+) 1
    FROM reach AS r
    CROSS JOIN LATERAL (
        -- what a view (or a rule) reads or writes
        SELECT d.refobjid AS oid
        FROM pg_catalog.pg_rewrite AS w
        JOIN pg_catalog.pg_depend AS d
          ON d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_rewrite'::pg_catalog.regclass::pg_catalog.oid
         AND d.objid OPERATOR(pg_catalog.=) w.oid
         AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass::pg_catalog.oid
         AND d.refobjid OPERATOR(pg_catalog.<>) r.oid
        WHERE w.ev_class OPERATOR(pg_catalog.=) r.oid
      UNION ALL
        -- the tables a table inherits from (a partition's parents too)
        SELECT i.inhparent
        FROM pg_catalog.pg_inherits AS i
        WHERE i.inhrelid OPERATOR(pg_catalog.=) r.oid
    ) AS next
    WHERE r.depth OPERATOR(pg_catalog.<) 32
)
SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) AS own
FROM reach AS r
JOIN pg_catalog.pg_class AS c ON c.oid OPERATOR(pg_catalog.=) r.oid
JOIN pg_catalog.pg_namespace AS n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
WHERE pg_catalog.lower(c.relname::pg_catalog.text) OPERATOR(pg_catalog.=)
          ANY ('{import_jobs,import_job_errors}'::pg_catalog.text[])
   OR pg_catalog.lower(c.relname::pg_catalog.text) OPERATOR(pg_catalog.~~)
          'importd\_%'::pg_catalog.text
   OR pg_catalog.lower(n.nspname::pg_catalog.text) OPERATOR(pg_catalog.=)
          'importd'::pg_catalog.text
   OR pg_catalog.lower(n.nspname::pg_catalog.text) OPERATOR(pg_catalog.~~)
          'importd\_%'::pg_catalog.text
LIMIT 1
