-- For importd web's job list: newest first, $10 rows at most, with ids in [$11, $1).
-- Keyset paging: the cursor $1 is an index condition on the primary key, so page 1,000
-- costs what page 1 does. The floor $11 bounds what one filtered page may scan (a rare
-- tenant or a dedup key must not read the whole history in one request: the page offers
-- to search further back instead). Each filter is off when NULL: status $2, kind $3,
-- queue $4, tenant $5, created in [$6, $7), the search (id $8 or dedup key $9). importd
-- web plans it for the values given (plan_cache_mode), so an unused filter folds away.
-- The last error as stored (importd keeps 4,000 characters at most): the web redacts it,
-- then cuts it for the list, so a secret the cut falls inside is masked whole.
SELECT id, kind, queue, tenant_id, status, priority, attempts, max_attempts, rows_done,
       rows_total, rows_failed, dedup_key, created_at, run_at, finished_at,
       left(last_error, 4000) AS last_error
FROM public.import_jobs
WHERE id < $1::bigint
  AND id >= $11::bigint
  AND ($2::text IS NULL OR status = $2::text)
  AND ($3::text IS NULL OR kind = $3::text)
  AND ($4::text IS NULL OR queue = $4::text)
  AND ($5::text IS NULL OR tenant_id = $5::text)
  AND ($6::timestamptz IS NULL OR created_at >= $6::timestamptz)
  AND ($7::timestamptz IS NULL OR created_at < $7::timestamptz)
  AND (($8::bigint IS NULL AND $9::text IS NULL) OR id = $8::bigint OR dedup_key = $9::text)
ORDER BY id DESC
LIMIT $10
