-- For importd web's overview: whether the daemon registry exists in this schema.
SELECT pg_catalog.to_regclass('public.importd_daemons') IS NOT NULL AS present
