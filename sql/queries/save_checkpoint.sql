-- Record how far job $1's run got, in the transaction that loaded those rows, and only
-- while daemon $2 still holds the lease of attempt $3. No row back: the lease is lost and
-- the caller must roll back.
UPDATE public.import_jobs
SET checkpoint  = $4::text::jsonb,
    rows_done   = $5,
    rows_failed = $6,
    bytes_read  = $7,
    rows_total  = coalesce($8, rows_total),
    updated_at  = now()
WHERE id = $1
  AND status = 'running'
  AND locked_by = $2
  AND attempts = $3
RETURNING id
