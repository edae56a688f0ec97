-- Insert jobs without dedup keys in one statement: enqueue_many's fast path (a batch with
-- a dedup key goes through enqueue_jobs). $1..$3, $5..$8 are parallel arrays; $4 is the
-- batch's payloads as one JSON array, encoded once by the client and sent as text so any
-- connection works, whatever its codecs. The identity column draws the ids in input order
-- (the ordinality scan is already sorted), so the caller sorts the returned ids to get
-- one id per input row, in input order.
INSERT INTO public.import_jobs
    (kind, queue, tenant_id, payload, priority, run_at, max_attempts, timeout)
SELECT t.kind, t.queue, t.tenant_id, t.payload, t.priority,
       coalesce(t.run_at, now()), t.max_attempts, make_interval(secs => t.timeout_s)
FROM ROWS FROM (unnest($1::text[]), unnest($2::text[]), unnest($3::text[]),
                jsonb_array_elements($4::text::jsonb), unnest($5::smallint[]),
                unnest($6::timestamptz[]), unnest($7::int[]), unnest($8::float8[]))
     WITH ORDINALITY
     AS t(kind, queue, tenant_id, payload, priority, run_at, max_attempts, timeout_s, ord)
ORDER BY t.ord
RETURNING id
