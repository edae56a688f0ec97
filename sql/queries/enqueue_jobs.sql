-- Insert jobs from parallel arrays in one statement and return one id per input row, in
-- input order, as one array (NULL for a key whose holder this snapshot cannot see). A row
-- whose dedup_key belongs to an unfinished job (in the table, or earlier in the same
-- batch) is not inserted; the existing job's id comes back instead.
-- $4 is the batch's payloads as one JSON array, encoded once by the client and sent as
-- text so any connection works, whatever its codecs.
-- Ids are drawn from the identity sequence first so each input row knows its own.
WITH input AS (
    -- The sequence is looked up once (an initplan), not once per row.
    SELECT t.*,
           nextval((SELECT pg_catalog.pg_get_serial_sequence('public.import_jobs', 'id')
                   )::regclass) AS new_id
    FROM ROWS FROM (unnest($1::text[]), unnest($2::text[]), unnest($3::text[]),
                    jsonb_array_elements($4::text::jsonb), unnest($5::smallint[]),
                    unnest($6::timestamptz[]), unnest($7::int[]), unnest($8::float8[]),
                    unnest($9::text[]))
         WITH ORDINALITY
         AS t(kind, queue, tenant_id, payload, priority, run_at, max_attempts, timeout_s,
              dedup_key, ord)
),
ins AS (
    INSERT INTO public.import_jobs
        (id, kind, queue, tenant_id, payload, priority, run_at, max_attempts, timeout, dedup_key)
    OVERRIDING SYSTEM VALUE
    SELECT new_id, kind, queue, tenant_id, payload, priority, coalesce(run_at, now()),
           max_attempts, make_interval(secs => timeout_s), dedup_key
    FROM input
    ORDER BY ord
    ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL AND status IN ('pending', 'running')
    DO NOTHING
    RETURNING id, dedup_key
)
SELECT array_agg(coalesce(mine.id, sibling.id, existing.id) ORDER BY i.ord)
FROM input AS i
LEFT JOIN ins AS mine ON mine.id = i.new_id
-- The row that took this key in this batch: ins holds at most one row per key (the unique
-- index), so a plain join, not a search of ins per row (that cost O(batch²): 35 µs a job
-- in a batch of 1,000 keys).
LEFT JOIN ins AS sibling ON sibling.dedup_key = i.dedup_key
-- The unfinished job that already held the key, looked up only for a row that got no id
-- above.
LEFT JOIN LATERAL (
    SELECT e.id FROM public.import_jobs AS e
    WHERE mine.id IS NULL AND sibling.id IS NULL
      AND i.dedup_key IS NOT NULL AND e.dedup_key = i.dedup_key
      AND e.status IN ('pending', 'running')
    LIMIT 1
) AS existing ON true
