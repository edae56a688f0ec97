-- Make sure the shared state row of each rate limit $1 exists (a new limit starts idle).
INSERT INTO public.importd_rate_limits (key)
SELECT unnest($1::text[])
ON CONFLICT (key) DO NOTHING
