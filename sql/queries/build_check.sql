-- The statements that check rows of a failing chunk in one pass, set-based: the rows go
-- (by COPY) into temporary table $1, whose text columns c1..cN hold the values of the
-- import's columns $2 in their order, after the row's source line, a DO block converts
-- each row to types $3 the way COPY would and notes the error of each bad row, then the
-- good rows move into $4.$5: into the columns $2 of the target, or (when $6) into the
-- columns c1..cN of a staging table, with the source line. The helper table's own
-- columns never take a user's name (importd_line, importd_error and c1..cN: a target
-- may have columns of any name); the user's names appear only where rows go into the
-- target and in the messages of bad rows. Names are quoted by format('%I'); the types
-- are format_type()'s own output.
--
-- "create" makes the table once per session (its name says which columns it has) and
-- empties it for each use (TRUNCATE: a DELETE leaves dead rows that each statement
-- after it scans again until the commit; the table of refused rows, which holds few,
-- is emptied by DELETE, which changes no catalog row: a transaction that only wrote
-- temporary tables then commits without waiting for the WAL's flush); ON COMMIT
-- DELETE ROWS empties it at each commit too. Creating
-- a table costs 1 to 15 ms of catalog work (and a commit that waits for the WAL flush),
-- emptying 400 rows well under one. One exception block (a subtransaction) per row; a
-- counter says which column was being converted when it failed (PL/pgSQL keeps
-- variables as they were at the error), so a bad row costs that one block, not one block
-- per column (40 µs a bad row before, 15 then). The errors are gathered in arrays and
-- written by one UPDATE after the loop (an UPDATE per bad row in the exception handler
-- took about 60 % of the block's time). Source lines are unique in the table: one per
-- record. The block's own names never stand for a column (#variable_conflict).
WITH target AS (
    SELECT pg_catalog.to_regclass(pg_catalog.format('%I.%I', $4::text, $5::text)) AS oid
),
-- Each column's name, type and place, and its collation where the target's column has
-- one of its own (" COLLATE …", else ''): a test read in a temporary table, on values
-- cast from text, compares text as the target does only with it.
cols AS (
    SELECT u.c, u.t, u.o, coalesce((
        SELECT pg_catalog.format(' COLLATE %I.%I', n.nspname, k.collname)
        FROM pg_catalog.pg_attribute AS a
        JOIN pg_catalog.pg_type AS y ON y.oid = a.atttypid
        JOIN pg_catalog.pg_collation AS k ON k.oid = a.attcollation
        JOIN pg_catalog.pg_namespace AS n ON n.oid = k.collnamespace
        WHERE a.attrelid = (SELECT oid FROM target) AND a.attname = u.c
          AND a.attcollation <> y.typcollation), '') AS coll
    FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS u(c, t, o)
),
-- Rows the target surely refuses, tested set-based on the converted values: a NULL in a
-- NOT NULL column, a CHECK that is false (its columns all among the import's). Only
-- into the target itself, when it is a plain table without BEFORE INSERT row triggers
-- (a trigger may mend a row; a partition may check more): then every row it names is
-- refused, and loading the others first changes no outcome. NULL: no test.
flag AS (
    SELECT CASE WHEN NOT $6::bool
                 AND (SELECT r.relkind = 'r' FROM pg_catalog.pg_class AS r, target
                      WHERE r.oid = target.oid)
                 AND NOT EXISTS (
                     SELECT FROM pg_catalog.pg_trigger AS g, target
                     WHERE g.tgrelid = target.oid AND NOT g.tgisinternal
                       AND g.tgenabled <> 'D' AND g.tgtype & 7 = 7)  -- row, before, insert
           THEN NULLIF(pg_catalog.concat_ws(' OR ',
               (SELECT pg_catalog.string_agg(pg_catalog.format('%I IS NULL', a.attname), ' OR ')
                FROM pg_catalog.pg_attribute AS a, target
                WHERE a.attrelid = target.oid AND a.attnotnull AND a.attnum > 0
                  AND a.attname = ANY ($2::text[])),
               (SELECT pg_catalog.string_agg(pg_catalog.format(
                           'NOT coalesce((%s), true)', pg_catalog.pg_get_expr(k.conbin, k.conrelid)),
                       ' OR ')
                FROM pg_catalog.pg_constraint AS k, target
                WHERE k.conrelid = target.oid AND k.contype = 'c'
                  AND k.conkey <@ ARRAY(
                      SELECT a.attnum FROM pg_catalog.pg_attribute AS a
                      WHERE a.attrelid = target.oid AND a.attname = ANY ($2::text[])))
           ), '')
           END AS expr,
           -- The import's columns that test reads (the others need no conversion to
           -- find the rows it names: "refused_create" keeps them as text).
           ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute AS a, target
                 WHERE a.attrelid = target.oid AND a.attnum > 0
                   AND a.attname = ANY ($2::text[])
                   AND (a.attnotnull OR EXISTS (
                       SELECT FROM pg_catalog.pg_constraint AS k
                       WHERE k.conrelid = target.oid AND k.contype = 'c'
                         AND a.attnum = ANY (k.conkey)))) AS reads
),
-- When "insert" fails (a row the target refuses: a constraint, a trigger; the conversion
-- cannot see those), the good rows go in one by one, each in an exception block, in file
-- order, and the target's refusal of a row is noted as its error, told as PostgreSQL
-- tells it (the message, then the detail in parentheses, as for a COPY that fails on the
-- row); any other error stops the block. @TABLE@: the table the rows are in; @ROWS@:
-- which (all that converted, or those "flag" marked); @VALUES@: their values, cast
-- from the check's text columns or taken as they are from the typed table of refused
-- rows. A marked row that goes in after all is unmarked.
each AS (
    SELECT pg_catalog.format(
        $f$DO $importd$ #variable_conflict use_variable
DECLARE r record; importd_detail text; importd_lines bigint[] := '{}';
    importd_messages text[] := '{}'; importd_count bigint; importd_inserted bigint := 0;
BEGIN
    FOR r IN SELECT * FROM pg_temp.@TABLE@ WHERE @ROWS@ ORDER BY importd_line LOOP
        BEGIN
            INSERT INTO %I.%I (%s%s) VALUES (@VALUES@%s);
            GET DIAGNOSTICS importd_count = ROW_COUNT;  -- (0: a trigger skipped the row)
            importd_inserted := importd_inserted + importd_count;
        EXCEPTION WHEN integrity_constraint_violation OR data_exception OR plpgsql_error
                OR feature_not_supported THEN  -- (a CHECK's function refusing the row)
            GET STACKED DIAGNOSTICS importd_detail = PG_EXCEPTION_DETAIL;
            importd_lines := importd_lines || r.importd_line;
            importd_messages := importd_messages || (SQLERRM || CASE
                WHEN importd_detail <> '' THEN ' (' || importd_detail || ')' ELSE '' END);
        END;
    END LOOP;
    UPDATE pg_temp.@TABLE@ AS t SET importd_error = e.message
    FROM unnest(importd_lines, importd_messages) AS e(line, message)
    WHERE t.importd_line = e.line;
    UPDATE pg_temp.@TABLE@ SET importd_error = NULL WHERE importd_error = '';
    -- For the caller: the rows inserted (as an INSERT's status would say), the refused.
    PERFORM pg_catalog.set_config('importd.inserted', importd_inserted::text, true);
    PERFORM pg_catalog.set_config(
        'importd.refused', coalesce(pg_catalog.array_length(importd_lines, 1), 0)::text, true);
END $importd$$f$,
        $4::text, $5::text,
        (SELECT pg_catalog.string_agg(
            pg_catalog.format('%I', CASE WHEN $6::bool THEN 'c' || o ELSE c END), ', '
            ORDER BY o) FROM cols),
        CASE WHEN $6::bool THEN ', importd_line' ELSE '' END,
        CASE WHEN $6::bool THEN ', r.importd_line' ELSE '' END) AS tpl
),
-- The rows "copy_where" names, kept by a COPY of their own (only those) in a temporary
-- table of their own, under the user's names (the test reads them by those names),
-- after their source line and before their error ("refused_create"); the columns the
-- test reads typed, the others text (converted only when a row goes in). Not when a
-- user's column takes one of those two names. A COPY that does not give the source
-- line gets each row's place in its data instead (1, 2, …: its own sequence, reset by
-- "refused_create"; CACHE: a row's number costs no page write), and "refused_count"
-- then says how many rows the COPY read. The name says the table's shape (which
-- columns are typed, their types and collations: a digest of its column list), since
-- the table stays for the session: a session that a pool or a pooler gives to another
-- import of the same columns, whose target's NOT NULL, CHECKs or collations differ,
-- never meets a table typed for the other (it would fail on a test it cannot read, or
-- compare text under another collation and find other rows than the COPY left out).
-- (It differs from the table of releases that had no such numbers too.)
refused_shape AS (
    SELECT (SELECT pg_catalog.string_agg(pg_catalog.format(
                       '%I %s', c, CASE WHEN c = ANY (flag.reads) THEN t || coll ELSE 'text' END),
                   ', ' ORDER BY o)
            FROM cols) AS defs
    FROM flag
),
refused AS (
    SELECT CASE WHEN NOT ($2::text[] && ARRAY['importd_line', 'importd_error'])
           THEN pg_catalog.format('%s_q%s', $1::text, pg_catalog.left(pg_catalog.encode(
               pg_catalog.sha224(pg_catalog.convert_to(refused_shape.defs, 'UTF8')), 'hex'), 12))
           END AS name,
           pg_catalog.format('%s_n', $1::text) AS seq,
           refused_shape.defs
    FROM refused_shape
)
SELECT
    pg_catalog.format(
        'CREATE TEMP TABLE IF NOT EXISTS %I (importd_line bigint, %s, importd_error text) '
        'ON COMMIT DELETE ROWS; TRUNCATE pg_temp.%I',
        $1::text,
        (SELECT pg_catalog.string_agg(pg_catalog.format('%I text', 'c' || o), ', ' ORDER BY o)
         FROM cols),
        $1::text) AS "create",
    pg_catalog.format(
        $f$DO $importd$ #variable_conflict use_variable
DECLARE r record; importd_column int; importd_lines bigint[] := '{}';
    importd_messages text[] := '{}'; %s
BEGIN
    FOR r IN SELECT * FROM pg_temp.%I LOOP
        BEGIN
            %s
        EXCEPTION WHEN others THEN
            importd_lines := importd_lines || r.importd_line;
            importd_messages := importd_messages
                || ('column ' || (ARRAY[%s])[importd_column] || ': ' || SQLERRM);
        END;
    END LOOP;
    UPDATE pg_temp.%I AS t SET importd_error = e.message
    FROM unnest(importd_lines, importd_messages) AS e(line, message)
    WHERE t.importd_line = e.line;
END $importd$$f$,
        (SELECT pg_catalog.string_agg(pg_catalog.format('v%s %s;', o, t), ' ' ORDER BY o)
         FROM cols),
        $1::text,
        (SELECT pg_catalog.string_agg(
            pg_catalog.format('importd_column := %s; v%s := r.%I;', o, o, 'c' || o), ' ' ORDER BY o)
         FROM cols),
        (SELECT pg_catalog.string_agg(pg_catalog.format('%L', c), ', ' ORDER BY o)
         FROM cols),
        $1::text) AS "check",
    pg_catalog.format(
        'INSERT INTO %I.%I (%s%s) SELECT %s%s FROM pg_temp.%I WHERE importd_error IS NULL',
        $4::text, $5::text,
        (SELECT pg_catalog.string_agg(
            pg_catalog.format('%I', CASE WHEN $6::bool THEN 'c' || o ELSE c END), ', '
            ORDER BY o) FROM cols),
        CASE WHEN $6::bool THEN ', importd_line' ELSE '' END,
        (SELECT pg_catalog.string_agg(pg_catalog.format('CAST(%I AS %s)', 'c' || o, t), ', '
                                      ORDER BY o) FROM cols),
        CASE WHEN $6::bool THEN ', importd_line' ELSE '' END,
        $1::text) AS "insert",
    pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(each.tpl,
        '@ROWS@', 'importd_error IS NULL'), '@VALUES@', casts.list), '@TABLE@',
        pg_catalog.quote_ident($1::text)) AS insert_each,
    pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(each.tpl,
        '@ROWS@', 'importd_error = '''''), '@VALUES@', casts.list), '@TABLE@',
        pg_catalog.quote_ident($1::text)) AS insert_flagged,
    -- The rows "refused_copy" kept, one by one as "insert_flagged" does (their values
    -- typed already). NULL: no such table.
    CASE WHEN refused.name IS NOT NULL THEN
    pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(each.tpl,
        '@ROWS@', 'true'), '@VALUES@', (SELECT pg_catalog.string_agg(
            pg_catalog.format('CAST(r.%I AS %s)', c, t), ', ' ORDER BY o) FROM cols)),
        '@TABLE@', pg_catalog.quote_ident(refused.name)) END AS insert_refused,
    -- Marks the rows "flag" names ('' in importd_error): "insert" leaves them out,
    -- "insert_flagged" takes them. NULL: no test applies. (The test's names are the
    -- user's, resolved in the innermost query, which holds only the user's columns.)
    CASE WHEN flag.expr IS NOT NULL THEN pg_catalog.format(
        'UPDATE pg_temp.%I AS importd_c SET importd_error = '''' '
        'WHERE importd_c.importd_error IS NULL '
        'AND (SELECT %s FROM (SELECT %s OFFSET 0) AS importd_x)',
        $1::text,
        flag.expr,
        (SELECT pg_catalog.string_agg(
            pg_catalog.format('CAST(importd_c.%I AS %s)%s AS %I', 'c' || o, t, coll, c), ', '
            ORDER BY o)
         FROM cols))
    END AS flag,
    -- The same test for COPY's WHERE clause, on the target's own columns: the rows it
    -- names are left out of the COPY into the target ("flag" then finds them in the
    -- check's table). A COPY with a WHERE clause reads the columns it names, so it
    -- needs SELECT on the target besides INSERT. NULL: no test applies, or no right.
    CASE WHEN pg_catalog.has_table_privilege((SELECT oid FROM target), 'SELECT')
         THEN flag.expr END AS copy_where,
    -- Fails unless that test is immutable (a generated column's expression must be): a
    -- test that may judge a row anew each time (random(), now()) could leave out of the
    -- COPY a row "flag" does not mark. Run in a savepoint rolled back at once.
    CASE WHEN flag.expr IS NOT NULL THEN pg_catalog.format(
        'CREATE TEMP TABLE importd_probe (LIKE %I.%I); '
        'ALTER TABLE importd_probe ADD COLUMN importd_probe boolean '
        'GENERATED ALWAYS AS (%s) STORED',
        $4::text, $5::text, flag.expr)
    END AS probe,
    pg_catalog.format(
        'SELECT importd_line AS line, importd_error AS message FROM pg_temp.%I '
        'WHERE importd_error IS NOT NULL ORDER BY importd_line', $1::text) AS errors,
    CASE WHEN refused.name IS NOT NULL THEN pg_catalog.format(
        'CREATE TEMP SEQUENCE IF NOT EXISTS %I MINVALUE 0 CACHE 100000; '
        'CREATE TEMP TABLE IF NOT EXISTS %I ('
        'importd_line bigint DEFAULT pg_catalog.nextval(%L::regclass), %s, importd_error text) '
        'ON COMMIT DELETE ROWS; DELETE FROM pg_temp.%I; SELECT pg_catalog.setval(%L, 0)',
        refused.seq,
        refused.name,
        'pg_temp.' || pg_catalog.quote_ident(refused.seq),
        refused.defs,
        refused.name,
        'pg_temp.' || pg_catalog.quote_ident(refused.seq)) END AS refused_create,
    refused.name AS refused_table,
    -- What the COPY into the table of "refused_create" and then "insert_refused" found,
    -- in one round trip: the rows the COPY read ("total": the place of its last row; 0
    -- when the COPY gave the source lines itself), the rows "insert_refused" inserted
    -- (NULL unless it ran in this transaction), and the line and the message of each
    -- refused row, in line order.
    CASE WHEN refused.name IS NOT NULL THEN pg_catalog.format(
        'SELECT pg_catalog.currval(%L::regclass) AS total, NULLIF('
        'pg_catalog.current_setting(''importd.inserted'', true), '''')::bigint AS inserted, '
        'coalesce(pg_catalog.array_agg(importd_line ORDER BY importd_line) '
        'FILTER (WHERE importd_error IS NOT NULL), ''{}'') AS lines, '
        'coalesce(pg_catalog.array_agg(importd_error ORDER BY importd_line) '
        'FILTER (WHERE importd_error IS NOT NULL), ''{}'') AS messages '
        'FROM pg_temp.%I',
        'pg_temp.' || pg_catalog.quote_ident(refused.seq), refused.name) END AS refused_found,
    -- Whether an enabled ON INSERT rule rewrites the target's INSERTs: COPY ignores
    -- rules, an INSERT does not, so rows the check would insert could go elsewhere (or
    -- nowhere) where COPY loads them; then no statement here inserts into the target.
    EXISTS (SELECT FROM pg_catalog.pg_rewrite AS w, target
            WHERE w.ev_class = target.oid AND w.ev_type = '3' AND w.ev_enabled <> 'D')
        AS rewritten
FROM flag, each, refused,
    (SELECT pg_catalog.string_agg(pg_catalog.format('CAST(r.%I AS %s)', 'c' || o, t), ', '
                                  ORDER BY o) AS list FROM cols) AS casts
