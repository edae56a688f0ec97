-- The statement that moves rows of staging table importd_staging.$1 (its columns c1..cN,
-- by position: build_staging) into columns $4 of $2.$3, with the conflict rule $5 on key
-- columns $6. The generated statement takes the rows whose source line lies in [$1, $2).
-- Identifiers are quoted by format('%I').
WITH cols AS (
    SELECT pg_catalog.string_agg(pg_catalog.format('%I', c), ', ' ORDER BY o) AS list,
           pg_catalog.string_agg(pg_catalog.format('%I', 'c' || o), ', ' ORDER BY o) AS staged
    FROM unnest($4::text[]) WITH ORDINALITY AS t(c, o)
),
keys AS (
    SELECT pg_catalog.string_agg(pg_catalog.format('%I', c), ', ' ORDER BY o) AS list
    FROM unnest($6::text[]) WITH ORDINALITY AS t(c, o)
),
sets AS (
    SELECT pg_catalog.string_agg(pg_catalog.format('%I = EXCLUDED.%I', c, c), ', '
                                 ORDER BY o) AS list
    FROM unnest($4::text[]) WITH ORDINALITY AS t(c, o)
    WHERE c <> ALL ($6::text[])
)
SELECT pg_catalog.format(
    'INSERT INTO %I.%I AS target (%s) SELECT %s FROM importd_staging.%I '
    'WHERE importd_line >= $1 AND importd_line < $2 %s',
    $2::text, $3::text, cols.list, cols.staged, $1::text,
    CASE $5::text
        WHEN 'ignore' THEN 'ON CONFLICT ' || coalesce('(' || keys.list || ') ', '') || 'DO NOTHING'
        WHEN 'update' THEN CASE WHEN sets.list IS NULL
                                THEN 'ON CONFLICT (' || keys.list || ') DO NOTHING'
                                ELSE 'ON CONFLICT (' || keys.list || ') DO UPDATE SET ' || sets.list
                           END
        ELSE ''
    END)
FROM cols, keys, sets
