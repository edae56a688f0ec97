-- Whether job $1's staging table exists, and the statement that asks whether it holds any
-- row (a server crash empties UNLOGGED tables). Names are quoted by format('%I').
SELECT pg_catalog.to_regclass(pg_catalog.format('importd_staging.%I', 'job_' || $1::bigint))
       IS NOT NULL AS present,
       pg_catalog.format('SELECT EXISTS (SELECT 1 FROM importd_staging.%I)',
                         'job_' || $1::bigint) AS probe,
       pg_catalog.format('CREATE INDEX IF NOT EXISTS %I ON importd_staging.%I (importd_line)',
                         'job_' || $1::bigint || '_line', 'job_' || $1::bigint) AS index_lines,
       pg_catalog.format('SELECT count(*) AS n, min(importd_line) AS lo, '
                         'percentile_disc(0.5) WITHIN GROUP (ORDER BY importd_line) AS mid '
                         'FROM importd_staging.%I WHERE importd_line >= $1 AND importd_line < $2',
                         'job_' || $1::bigint) AS range_stats,
       pg_catalog.format('SELECT importd_line AS line, (to_jsonb(t) - ''importd_line'')::text AS raw '
                         'FROM importd_staging.%I AS t '
                         'WHERE importd_line >= $1 AND importd_line < $2 LIMIT 1',
                         'job_' || $1::bigint) AS one_row,
       pg_catalog.format('TRUNCATE importd_staging.%I', 'job_' || $1::bigint) AS truncate
