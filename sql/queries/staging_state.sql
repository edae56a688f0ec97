-- The statements about staging table importd_staging.$1 (its name, quoted by
-- format('%I')): whether it exists, whether it holds a row (a server crash empties
-- UNLOGGED tables), and the helpers that isolate rows by source line.
SELECT pg_catalog.to_regclass(pg_catalog.format('importd_staging.%I', $1::text))
       IS NOT NULL AS present,
       pg_catalog.format('SELECT EXISTS (SELECT 1 FROM importd_staging.%I)', $1::text) AS probe,
       pg_catalog.format('CREATE INDEX IF NOT EXISTS %I ON importd_staging.%I (importd_line)',
                         $1::text || '_line', $1::text) AS index_lines,
       pg_catalog.format('SELECT count(*) AS n, min(importd_line) AS lo, '
                         'percentile_disc(0.5) WITHIN GROUP (ORDER BY importd_line) AS mid '
                         'FROM importd_staging.%I WHERE importd_line >= $1 AND importd_line < $2',
                         $1::text) AS range_stats,
       pg_catalog.format('SELECT importd_line AS line, (to_jsonb(t) - ''importd_line'')::text AS raw '
                         'FROM importd_staging.%I AS t '
                         'WHERE importd_line >= $1 AND importd_line < $2 LIMIT 1',
                         $1::text) AS one_row,
       pg_catalog.format('TRUNCATE importd_staging.%I', $1::text) AS truncate,
       pg_catalog.format('DROP TABLE IF EXISTS importd_staging.%I', $1::text) AS drop
