-- importd schema, version 2: what the import handlers need to resume and stage.

-- Where an interrupted run of a job got to (for imports: bytes and records consumed,
-- rows loaded and rejected, the source's fingerprint). Written in the same transaction as
-- the rows it accounts for, and only under the run's lease.
ALTER TABLE public.import_jobs ADD COLUMN checkpoint jsonb;

-- Per-job staging tables of atomic imports: importd_staging.job_<id>. UNLOGGED: a crash
-- of the server empties them, which the import notices and restarts from the top.
CREATE SCHEMA IF NOT EXISTS importd_staging;
COMMENT ON SCHEMA importd_staging IS 'importd: staging tables of atomic imports, one per job';
