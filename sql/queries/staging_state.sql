-- The statements about staging table importd_staging.$1 (its name, quoted by
-- format('%I')): whether it exists, its columns as "name type" in order (its shape:
-- importd_line bigint, then c1..cN, in this release; an older release's tables named
-- their columns after the user's), whether it holds a row (a server crash empties
-- UNLOGGED tables), and the helpers that isolate rows by source line. "one_row" gives a
-- row's values as JSON under the user's column names, its parameter $3 (in the order of
-- c1..cN).
SELECT pg_catalog.to_regclass(pg_catalog.format('importd_staging.%I', $1::text))
       IS NOT NULL AS present,
       ARRAY(SELECT a.attname || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod)
             FROM pg_catalog.pg_attribute AS a
             WHERE a.attrelid
                   = pg_catalog.to_regclass(pg_catalog.format('importd_staging.%I', $1::text))
               AND a.attnum > 0
               AND NOT a.attisdropped
             ORDER BY a.attnum) AS shape,
       pg_catalog.format('SELECT EXISTS (SELECT 1 FROM importd_staging.%I)', $1::text) AS probe,
       pg_catalog.format('CREATE INDEX IF NOT EXISTS %I ON importd_staging.%I (importd_line)',
                         $1::text || '_line', $1::text) AS index_lines,
       pg_catalog.format('SELECT count(*) AS n, min(importd_line) AS lo, '
                         'percentile_disc(0.5) WITHIN GROUP (ORDER BY importd_line) AS mid '
                         'FROM importd_staging.%I WHERE importd_line >= $1 AND importd_line < $2',
                         $1::text) AS range_stats,
       pg_catalog.format('SELECT t.importd_line AS line, '
                         '(SELECT pg_catalog.json_object_agg(($3::text[])[u.o], u.value ORDER BY u.o) '
                         'FROM pg_catalog.json_each(pg_catalog.row_to_json(t)) AS e, '
                         'LATERAL (SELECT substr(e.key, 2)::int AS o, e.value) AS u '
                         'WHERE e.key <> ''importd_line'')::text AS raw '
                         'FROM importd_staging.%I AS t '
                         'WHERE t.importd_line >= $1 AND t.importd_line < $2 LIMIT 1',
                         $1::text) AS one_row,
       pg_catalog.format('TRUNCATE importd_staging.%I', $1::text) AS truncate,
       pg_catalog.format('DROP TABLE IF EXISTS importd_staging.%I', $1::text) AS drop
