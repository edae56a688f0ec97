-- The statement that creates staging table importd_staging.$1: columns $4 of $2.$3 with
-- their types, plus the source line of each row. Identifiers are quoted by format('%I').
SELECT pg_catalog.format(
    'CREATE UNLOGGED TABLE IF NOT EXISTS importd_staging.%I AS '
    'SELECT %s, NULL::bigint AS importd_line FROM %I.%I WITH NO DATA',
    $1::text,
    (SELECT pg_catalog.string_agg(pg_catalog.format('%I', c), ', ' ORDER BY o)
     FROM unnest($4::text[]) WITH ORDINALITY AS t(c, o)),
    $2::text, $3::text)
