-- Forget daemons not seen for $1 seconds (killed, or their host is gone); their names.
DELETE FROM public.importd_daemons
WHERE last_seen < now() - make_interval(secs => $1::float8)
RETURNING name
