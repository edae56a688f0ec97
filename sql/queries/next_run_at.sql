-- When the next pending job of the served queues / kinds comes due (NULL: none pending).
-- Seconds from now, so the daemon's clock never enters the computation.
SELECT extract(epoch FROM (min(run_at) - now()))::float8 AS due_in
FROM public.import_jobs
WHERE status = 'pending'
  AND ($1::text[] IS NULL OR queue = ANY ($1::text[]))
  AND ($2::text[] IS NULL OR kind = ANY ($2::text[]))
  AND ($3::text[] IS NULL OR queue <> ALL ($3::text[]))
  AND ($4::text[] IS NULL OR kind <> ALL ($4::text[]))
