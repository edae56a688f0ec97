-- Delete up to $3 jobs with status $1 that finished more than $2 seconds ago (their
-- row-level errors go with them). Small batches: short locks, no bloat bursts.
DELETE FROM public.import_jobs
WHERE id IN (
    SELECT id FROM public.import_jobs
    WHERE status = $1::text
      AND finished_at < now() - make_interval(secs => $2::float8)
    ORDER BY finished_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
