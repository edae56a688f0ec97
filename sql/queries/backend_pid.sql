-- The process id of the server session this statement ran in (a pooler announces its
-- own at connect, so the two differ behind one).
SELECT pg_catalog.pg_backend_pid()
