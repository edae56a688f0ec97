-- The columns of table $1.$2 as importd may load them: name, type, whether it is json or
-- jsonb, and whether it can take a value (generated columns cannot). No row: no such
-- table, or not visible to this role.
SELECT a.attname AS name,
       pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
       t.typname IN ('json', 'jsonb') AS is_json,
       a.attgenerated = '' AND a.attidentity <> 'a' AS writable
FROM pg_catalog.pg_attribute AS a
JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid
WHERE a.attrelid = pg_catalog.to_regclass(pg_catalog.format('%I.%I', $1::text, $2::text))
  AND a.attnum > 0
  AND NOT a.attisdropped
ORDER BY a.attnum
