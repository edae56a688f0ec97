-- What the check's row-by-row insert (build_check.sql, "insert_each") left for its caller
-- in the transaction's settings: the rows it inserted and the rows the target refused.
SELECT pg_catalog.current_setting('importd.inserted') AS inserted,
       pg_catalog.current_setting('importd.refused') AS refused
