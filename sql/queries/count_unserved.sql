-- Pending jobs by kind of queues $1 and kinds $2 (NULL: every one) whose kind is not
-- among $3 (the kinds a daemon has handlers for): what a drain leaves for others.
SELECT kind, count(*) AS n
FROM public.import_jobs
WHERE status = 'pending'
  AND ($1::text[] IS NULL OR queue = ANY ($1::text[]))
  AND ($2::text[] IS NULL OR kind = ANY ($2::text[]))
  AND kind <> ALL ($3::text[])
GROUP BY kind
ORDER BY kind
