-- Whether the record of applied migrations exists (an empty database has none).
SELECT pg_catalog.to_regclass('public.importd_migrations') IS NOT NULL
