-- Row-level errors of job $1, attempt $2: source line, message, raw record.
INSERT INTO public.import_job_errors (job_id, attempt, line_number, message, raw_record)
SELECT $1, $2, t.line, t.message, t.raw
FROM unnest($3::bigint[], $4::text[], $5::text[]) AS t(line, message, raw)
