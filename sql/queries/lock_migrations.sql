-- Wait for advisory lock $1 (importd's migration key) until this transaction ends: any
-- number of `importd migrate` started at once then apply each migration once.
SELECT pg_catalog.pg_advisory_xact_lock($1::bigint)
