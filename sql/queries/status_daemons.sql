-- For `importd status` and `importd doctor`: the daemons seen in the last $1 seconds,
-- with how long ago (seconds) they were last seen and started.
SELECT name, host, pid, version, kinds, queues,
       extract(epoch FROM now() - last_seen)::float8 AS seen_s,
       extract(epoch FROM now() - started_at)::float8 AS up_s
FROM public.importd_daemons
WHERE last_seen > now() - make_interval(secs => $1::float8)
ORDER BY name
