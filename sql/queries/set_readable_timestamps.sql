-- Timestamps as text that Python's datetime.fromisoformat reads, in UTC, for the rest of
-- the session (see db.readable_timestamps).
SELECT pg_catalog.set_config('DateStyle', 'ISO, YMD', false),
       pg_catalog.set_config('TimeZone', 'UTC', false)
