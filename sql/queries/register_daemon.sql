-- Register daemon $1 (host $2, pid $3, version $4, kinds $5, queues $6, NULL: every
-- queue) or refresh its row: last_seen moves on, started_at stays. An upsert, so a live
-- daemon whose row was pruned (it was stalled for a while) comes back.
INSERT INTO public.importd_daemons AS d
    (name, host, pid, version, kinds, queues, started_at, last_seen)
VALUES ($1, $2, $3, $4, $5::text[], $6::text[], now(), now())
ON CONFLICT (name) DO UPDATE
SET host = EXCLUDED.host, pid = EXCLUDED.pid, version = EXCLUDED.version,
    kinds = EXCLUDED.kinds, queues = EXCLUDED.queues, last_seen = now()
