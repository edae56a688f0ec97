-- For `importd status`: the tenants with the most running jobs (what a per-tenant cap
-- binds), and where each rate limit stands (seconds until its schedule runs out; <= 0:
-- idle; a limit not used for an hour is left out). Both read only the running-tenant index and the tiny rate-limit table.
SELECT 'tenant' AS what, tenant_id AS name, count(*)::float8 AS value
FROM (SELECT tenant_id FROM public.import_jobs
      WHERE status = 'running' AND tenant_id IS NOT NULL) AS r
GROUP BY tenant_id
UNION ALL
SELECT 'rate_limit', key, extract(epoch FROM tat - clock_timestamp())::float8
FROM public.importd_rate_limits
WHERE tat > clock_timestamp() - interval '1 hour'
ORDER BY 1, 3 DESC, 2
