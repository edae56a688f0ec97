-- Failed or cancelled jobs back to pending with their attempts reset: the ids $1, or
-- (when $1 is NULL) every failed job matching kind $2, queue $3 and finished since $4.
-- A job whose dedup key an unfinished job holds now is left alone (skipped).
WITH chosen AS (
    SELECT j.id,
           EXISTS (SELECT 1 FROM public.import_jobs AS o
                   WHERE o.dedup_key = j.dedup_key AND o.id <> j.id
                     AND o.status IN ('pending', 'running')) AS blocked
    FROM public.import_jobs AS j
    WHERE CASE WHEN $1::bigint[] IS NOT NULL
               THEN j.id = ANY ($1::bigint[]) AND j.status IN ('failed', 'cancelled')
               ELSE j.status = 'failed'
                    AND ($2::text IS NULL OR j.kind = $2::text)
                    AND ($3::text IS NULL OR j.queue = $3::text)
                    AND ($4::timestamptz IS NULL OR j.finished_at >= $4::timestamptz)
          END
    FOR UPDATE
),
moved AS (
    UPDATE public.import_jobs AS j
    SET status = 'pending', attempts = 0, run_at = now(), finished_at = NULL,
        updated_at = now()
    FROM chosen
    WHERE j.id = chosen.id AND NOT chosen.blocked
    RETURNING j.id
)
SELECT (SELECT count(*) FROM moved) AS retried,
       (SELECT count(*) FROM chosen WHERE blocked) AS skipped
