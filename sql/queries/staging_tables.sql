-- The staging tables of job $1, in the order they were created: job_<id> and its chunk
-- tables job_<id>_<n>.
SELECT c.relname AS name
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = 'importd_staging'
  AND c.relkind = 'r'
  AND c.relname ~ ('^job_' || $1::bigint || '(_[0-9]+)?$')
ORDER BY coalesce(substring(c.relname FROM '^job_[0-9]+_([0-9]+)$')::bigint, -1)
