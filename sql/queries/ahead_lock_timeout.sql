-- The check ahead's bound on a lock wait, for its transaction only ($1: '50ms'). Its
-- INSERTs into the target (the refused rows, tried one by one for their messages) take
-- the target's ROW EXCLUSIVE lock; when another session's stronger lock (an ALTER TABLE,
-- a TRUNCATE, a LOCK) is queued behind the loader's transaction, that request waits
-- behind it, while the loader waits for the check ahead: a deadlock PostgreSQL cannot
-- see (one wait is the client's). Failing fast breaks it: the loader does the work.
SELECT pg_catalog.set_config('lock_timeout', $1::text, true) AS lock_timeout
