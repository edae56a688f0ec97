-- The columns of table $1.$2 as importd may load them: name, type, whether it is json or
-- jsonb, and whether it can take a value (generated columns cannot). For the screen of
-- bad rows (importd/handlers/imports/screening.py), the type its values are judged as:
-- a domain without constraints (no CHECK, no NOT NULL) takes what its base type takes;
-- an enum's labels, in order; and the CHECK constraints that read this column alone, by
-- name, each as pg_get_expr deparses it (importd/handlers/imports/bounds.py reads the
-- comparisons with numbers among them). No row: no such table, or not visible to this
-- role.
SELECT a.attname AS name,
       pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
       t.typname IN ('json', 'jsonb') AS is_json,
       a.attgenerated = '' AND a.attidentity <> 'a' AS writable,
       CASE WHEN t.typtype = 'd' AND NOT t.typnotnull AND NOT EXISTS (
                SELECT FROM pg_catalog.pg_constraint AS c WHERE c.contypid = t.oid)
            THEN pg_catalog.format_type(t.typbasetype, t.typtypmod)
            ELSE pg_catalog.format_type(a.atttypid, a.atttypmod)
       END AS screen_as,
       CASE WHEN t.typtype = 'e' THEN ARRAY(
                SELECT e.enumlabel::text FROM pg_catalog.pg_enum AS e
                WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder)
       END AS labels,
       ARRAY(SELECT k.conname::text FROM pg_catalog.pg_constraint AS k
             WHERE k.conrelid = a.attrelid AND k.contype = 'c' AND k.conkey = ARRAY[a.attnum]
             ORDER BY k.conname) AS check_names,
       ARRAY(SELECT pg_catalog.pg_get_expr(k.conbin, k.conrelid)
             FROM pg_catalog.pg_constraint AS k
             WHERE k.conrelid = a.attrelid AND k.contype = 'c' AND k.conkey = ARRAY[a.attnum]
             ORDER BY k.conname) AS check_exprs
FROM pg_catalog.pg_attribute AS a
JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid
WHERE a.attrelid = pg_catalog.to_regclass(pg_catalog.format('%I.%I', $1::text, $2::text))
  AND a.attnum > 0
  AND NOT a.attisdropped
ORDER BY a.attnum
