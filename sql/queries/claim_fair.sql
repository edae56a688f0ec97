-- The tenant-fair claim (importd_claim_fair, defined by migration 0003 and redefined by 0004,
-- 0005 and 0007; the definition in force is 0007's): up to $1
-- jobs for daemon $2, lease margin $3 seconds; $4..$7 the queue / kind filters and
-- exclusions (a daemon always passes $5: the kinds it has handlers for);
-- $8 the per-tenant cap (NULL: none); $9, $10 the walk's cursor from the previous claim.
-- Rows come back in the order they were picked; run_at and created_at within the years
-- every client can hold (see claim_jobs.sql).
SELECT j.id, j.kind, j.queue, j.tenant_id, j.payload, j.priority,
       least(greatest(j.run_at, timestamptz '0001-01-01 00:00:00+00'),
             timestamptz '9999-12-31 23:59:59+00') AS run_at,
       j.attempts, j.max_attempts, extract(epoch FROM j.timeout)::float8 AS timeout_s,
       j.locked_until, j.rows_done, j.rows_failed, j.rows_total,
       least(greatest(j.created_at, timestamptz '0001-01-01 00:00:00+00'),
             timestamptz '9999-12-31 23:59:59+00') AS created_at,
       j.checkpoint, extract(epoch FROM now() - j.run_at)::float8 AS waited_s
FROM public.importd_claim_fair($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) AS j
