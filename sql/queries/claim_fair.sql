-- The tenant-fair claim (see importd_claim_fair in migration 0003): up to $1 jobs for
-- daemon $2, lease margin $3 seconds; $4..$7 the queue / kind filters and exclusions;
-- $8 the per-tenant cap (NULL: none); $9, $10 the walk's cursor from the previous claim.
-- Rows come back in the order they were picked.
SELECT j.id, j.kind, j.queue, j.tenant_id, j.payload, j.priority, j.run_at, j.attempts,
       j.max_attempts, extract(epoch FROM j.timeout)::float8 AS timeout_s,
       j.locked_until, j.rows_done, j.rows_failed, j.rows_total, j.created_at,
       j.checkpoint, extract(epoch FROM now() - j.run_at)::float8 AS waited_s
FROM public.importd_claim_fair($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) AS j
