-- Send notification $2 on channel $1 (the listener's health probe, doctor's round trip).
SELECT pg_catalog.pg_notify($1, $2)
