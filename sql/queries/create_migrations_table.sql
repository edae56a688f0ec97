-- The record of applied migrations, created by `importd migrate` before the first one
-- (every migration's own transaction then checks and writes it).
CREATE TABLE IF NOT EXISTS public.importd_migrations (
    version     integer PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
