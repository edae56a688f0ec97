-- Lock rate limit $1 (until the claim's transaction ends: daemons take turns) and say how
-- many jobs may start now, at one every $2 seconds with bursts of $3 (the generic cell
-- rate algorithm: a job conforms when tat <= now + ($3 - 1) * $2). "at" is the database's
-- clock, read once, so every daemon measures against the same clock.
SELECT c.at,
       greatest(0, floor(extract(epoch FROM c.at - greatest(r.tat, c.at)) / $2::float8)
                   + $3::integer)::integer AS allowed
FROM public.importd_rate_limits AS r
CROSS JOIN (SELECT clock_timestamp() AS at) AS c
WHERE r.key = $1
FOR UPDATE OF r
