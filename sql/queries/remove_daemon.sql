-- Daemon $1 leaves the registry (a clean exit).
DELETE FROM public.importd_daemons WHERE name = $1
