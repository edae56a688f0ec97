-- The statements that check a failing chunk in one pass, set-based: the chunk goes (by
-- COPY) into temporary table $1 of text columns $2 plus its source lines, a DO block
-- converts each row to types $3 the way COPY would (one exception block per row, one per
-- column only for a bad row, to name it) and notes the error of each bad row, then the
-- good rows move into $4.$5 (with their source line when $6, a staging table). Column
-- names are quoted by format('%I'); the types are format_type()'s own output.
WITH cols AS (
    SELECT c, t, o FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS u(c, t, o)
)
SELECT
    pg_catalog.format(
        'CREATE TEMP TABLE %I (importd_line bigint, %s, importd_error text) ON COMMIT DROP',
        $1::text,
        (SELECT pg_catalog.string_agg(pg_catalog.format('%I text', c), ', ' ORDER BY o)
         FROM cols)) AS "create",
    pg_catalog.format(
        $f$DO $importd$ DECLARE r record; importd_msg text; %s
BEGIN
    FOR r IN SELECT ctid AS importd_ctid, * FROM pg_temp.%I LOOP
        BEGIN
            %s
        EXCEPTION WHEN others THEN
            importd_msg := NULL;
            %s
            UPDATE pg_temp.%I SET importd_error = coalesce(importd_msg, SQLERRM)
            WHERE ctid = r.importd_ctid;
        END;
    END LOOP;
END $importd$$f$,
        (SELECT pg_catalog.string_agg(pg_catalog.format('v%s %s;', o, t), ' ' ORDER BY o)
         FROM cols),
        $1::text,
        (SELECT pg_catalog.string_agg(pg_catalog.format('v%s := r.%I;', o, c), ' ' ORDER BY o)
         FROM cols),
        (SELECT pg_catalog.string_agg(pg_catalog.format(
            'IF importd_msg IS NULL THEN BEGIN v%s := r.%I; EXCEPTION WHEN others THEN '
            'importd_msg := %L || SQLERRM; END; END IF;', o, c, 'column ' || c || ': '),
            ' ' ORDER BY o)
         FROM cols),
        $1::text) AS "check",
    pg_catalog.format(
        'INSERT INTO %I.%I (%s%s) SELECT %s%s FROM pg_temp.%I WHERE importd_error IS NULL',
        $4::text, $5::text,
        (SELECT pg_catalog.string_agg(pg_catalog.format('%I', c), ', ' ORDER BY o) FROM cols),
        CASE WHEN $6::bool THEN ', importd_line' ELSE '' END,
        (SELECT pg_catalog.string_agg(pg_catalog.format('CAST(%I AS %s)', c, t), ', '
                                      ORDER BY o) FROM cols),
        CASE WHEN $6::bool THEN ', importd_line' ELSE '' END,
        $1::text) AS "insert",
    pg_catalog.format(
        'SELECT importd_line AS line, importd_error AS message FROM pg_temp.%I '
        'WHERE importd_error IS NOT NULL ORDER BY importd_line', $1::text) AS errors,
    pg_catalog.format('DROP TABLE pg_temp.%I', $1::text) AS "drop"
