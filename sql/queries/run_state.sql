-- How job $1's last run ended, as far as the row says: read after a write whose reply
-- was lost, to tell "already written" from "the lease was lost".
SELECT status, attempts, locked_by, last_error
FROM public.import_jobs
WHERE id = $1
