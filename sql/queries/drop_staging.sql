-- The statement that drops job $1's staging table, if it exists.
SELECT pg_catalog.format('DROP TABLE IF EXISTS importd_staging.%I', 'job_' || $1::bigint)
