-- The migrations applied to this database, with the checksum of each file as applied.
SELECT version, checksum FROM public.importd_migrations
