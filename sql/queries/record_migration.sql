-- Migration $1 (file name $2, checksum $3) is applied, in the same transaction.
INSERT INTO public.importd_migrations (version, name, checksum) VALUES ($1, $2, $3)
