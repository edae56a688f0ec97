-- Insert jobs without dedup keys in one statement: enqueue_many's fast path (a batch with
-- a dedup key goes through enqueue_jobs). $4 is the batch's payloads as one JSON array,
-- encoded once by the client and sent as text so any connection works, whatever its
-- codecs; it has one element per job and sets the number of rows. $1..$3, $5..$8 are
-- arrays of one value per job, or of a single value when that column is the same for
-- every job of the batch (the common case: one kind, queue and set of options for a
-- whole batch), so a constant column travels, and is unnested, once instead of per row.
-- The identity column draws the ids in input order (the ordinality scan is already
-- sorted); they come back as one sorted array: one id per input row, in input order.
WITH ins AS (
    INSERT INTO public.import_jobs
        (kind, queue, tenant_id, payload, priority, run_at, max_attempts, timeout)
    SELECT CASE WHEN cardinality($1::text[]) = 1 THEN ($1::text[])[1] ELSE t.kind END,
           CASE WHEN cardinality($2::text[]) = 1 THEN ($2::text[])[1] ELSE t.queue END,
           CASE WHEN cardinality($3::text[]) = 1 THEN ($3::text[])[1] ELSE t.tenant_id END,
           t.payload,
           CASE WHEN cardinality($5::smallint[]) = 1 THEN ($5::smallint[])[1]
                ELSE t.priority END,
           coalesce(CASE WHEN cardinality($6::timestamptz[]) = 1 THEN ($6::timestamptz[])[1]
                         ELSE t.run_at END,
                    now()),
           CASE WHEN cardinality($7::int[]) = 1 THEN ($7::int[])[1] ELSE t.max_attempts END,
           make_interval(secs => CASE WHEN cardinality($8::float8[]) = 1
                                      THEN ($8::float8[])[1] ELSE t.timeout_s END)
    FROM ROWS FROM (unnest($1::text[]), unnest($2::text[]), unnest($3::text[]),
                    jsonb_array_elements($4::text::jsonb), unnest($5::smallint[]),
                    unnest($6::timestamptz[]), unnest($7::int[]), unnest($8::float8[]))
         WITH ORDINALITY
         AS t(kind, queue, tenant_id, payload, priority, run_at, max_attempts, timeout_s, ord)
    ORDER BY t.ord
    RETURNING id
)
SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM ins
