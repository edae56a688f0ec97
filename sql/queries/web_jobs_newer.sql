-- For importd web's job list, paging back: the $10 rows just newer than the cursor $1,
-- oldest first (the caller turns them round). Filters as in web_jobs.
SELECT id
FROM public.import_jobs
WHERE id > $1::bigint
  AND ($2::text IS NULL OR status = $2::text)
  AND ($3::text IS NULL OR kind = $3::text)
  AND ($4::text IS NULL OR queue = $4::text)
  AND ($5::text IS NULL OR tenant_id = $5::text)
  AND ($6::timestamptz IS NULL OR created_at >= $6::timestamptz)
  AND ($7::timestamptz IS NULL OR created_at < $7::timestamptz)
  AND (($8::bigint IS NULL AND $9::text IS NULL) OR id = $8::bigint OR dedup_key = $9::text)
ORDER BY id
LIMIT $10
