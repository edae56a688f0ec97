-- Lock rate limit $1 (until the claim's transaction ends: daemons take turns) and say how
-- many jobs may start now, at one every $2 seconds with bursts of $3. The generic cell
-- rate algorithm: a start conforms when tat <= at + tolerance, with a tolerance of
-- ($3 - 0.5) intervals: the burst, plus half an interval so that a daemon waking a little
-- late loses nothing (in any window of W seconds at most W / $2 + $3 jobs start, rounded
-- half up). "at" is the database's clock, read once, so every daemon measures against
-- the same clock.
SELECT c.at,
       greatest(0, floor(extract(epoch FROM c.at - greatest(r.tat, c.at)) / $2::float8
                         + $3::integer - 0.5) + 1)::integer AS allowed
FROM public.importd_rate_limits AS r
CROSS JOIN (SELECT clock_timestamp() AS at) AS c
WHERE r.key = $1
FOR UPDATE OF r
