-- For importd web's overview: the daemons in the registry, the most recently seen first.
SELECT name, host, pid, version, kinds, queues, started_at, last_seen,
       extract(epoch FROM now() - last_seen)::float8 AS seen_ago_s
FROM public.importd_daemons
ORDER BY last_seen DESC NULLS LAST, name
LIMIT 200
