-- How many pending jobs are due now, of queues $1 and kinds $2 (NULL: every one), for
-- drain's progress. A drain passes the kinds it has handlers for.
SELECT count(*)
FROM public.import_jobs
WHERE status = 'pending'
  AND run_at <= now()
  AND ($1::text[] IS NULL OR queue = ANY ($1::text[]))
  AND ($2::text[] IS NULL OR kind = ANY ($2::text[]))
