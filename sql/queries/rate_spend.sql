-- Spend $4 starts of rate limit $1 taken at $2 (one every $3 seconds, bursts of $5), and say
-- in how many seconds the next start conforms (<= 0: now); see rate_take.sql.
UPDATE public.importd_rate_limits
SET tat = greatest(tat, $2::timestamptz) + make_interval(secs => $3::float8 * $4::integer)
WHERE key = $1
RETURNING extract(epoch FROM tat - make_interval(secs => $3::float8 * ($5::integer - 0.5))
                  - clock_timestamp())::float8 AS next_in
