-- Cancel jobs $1 that are pending or running. A running job's row ends its lease here
-- (the fence then drops whatever its daemon writes) and its daemon is told at once on
-- the control channel, so it stops the handler.
WITH target AS (
    SELECT id, status AS was
    FROM public.import_jobs
    WHERE id = ANY ($1::bigint[]) AND status IN ('pending', 'running')
    FOR UPDATE
),
cancelled AS (
    UPDATE public.import_jobs AS j
    SET status = 'cancelled', finished_at = clock_timestamp(),
        locked_by = NULL, locked_until = NULL,
        last_error = 'Cancelled: by an operator' ||
                     CASE WHEN target.was = 'running' THEN ' while running' ELSE '' END,
        updated_at = clock_timestamp()
    FROM target
    WHERE j.id = target.id
    RETURNING j.id, target.was
)
SELECT id, was,
       CASE WHEN was = 'running'
            THEN pg_catalog.pg_notify('importd_control', 'cancel ' || id) IS NULL END AS told
FROM cancelled
ORDER BY id
