-- The statement that creates staging table importd_staging.$1 for columns $4 of $2.$3:
-- the source line of each row first (importd_line), then one column per import column,
-- named by position (c1..cN) with that column's type. The staging table's columns never
-- take a user's name, so a target may have columns of any name (importd_line included);
-- the user's names appear only in the move into the target (build_move). Identifiers are
-- quoted by format('%I').
SELECT pg_catalog.format(
    'CREATE UNLOGGED TABLE IF NOT EXISTS importd_staging.%I AS '
    'SELECT NULL::bigint AS importd_line, %s FROM %I.%I WITH NO DATA',
    $1::text,
    (SELECT pg_catalog.string_agg(pg_catalog.format('%I AS %I', c, 'c' || o), ', ' ORDER BY o)
     FROM unnest($4::text[]) WITH ORDINALITY AS t(c, o)),
    $2::text, $3::text)
