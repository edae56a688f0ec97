-- importd schema, version 1: the job table, row-level errors, and the notify trigger.
--
-- The trigger and function names are those of the original pg_net design, so the
-- verification queries written for it keep working.

CREATE TABLE public.import_jobs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          text        NOT NULL,
    queue         text        NOT NULL DEFAULT 'default',
    tenant_id     text,
    payload       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status        text        NOT NULL DEFAULT 'pending',
    -- Smaller runs first, like a Unix nice value.
    priority      smallint    NOT NULL DEFAULT 0,
    run_at        timestamptz NOT NULL DEFAULT now(),
    attempts      integer     NOT NULL DEFAULT 0,
    max_attempts  integer     NOT NULL DEFAULT 5,
    timeout       interval    NOT NULL DEFAULT interval '5 minutes',
    dedup_key     text,
    locked_by     text,
    locked_until  timestamptz,
    rows_total    bigint,
    rows_done     bigint      NOT NULL DEFAULT 0,
    rows_failed   bigint      NOT NULL DEFAULT 0,
    bytes_read    bigint      NOT NULL DEFAULT 0,
    last_error    text,
    result        jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,

    CONSTRAINT import_jobs_kind_check
        CHECK (kind ~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,99}$'),
    -- The queue is the NOTIFY payload and a metrics label: keep it short and plain.
    CONSTRAINT import_jobs_queue_check
        CHECK (queue ~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,62}$'),
    CONSTRAINT import_jobs_tenant_check
        CHECK (tenant_id IS NULL OR length(tenant_id) BETWEEN 1 AND 200),
    CONSTRAINT import_jobs_payload_check
        CHECK (jsonb_typeof(payload) = 'object'),
    CONSTRAINT import_jobs_status_check
        CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    CONSTRAINT import_jobs_attempts_check
        CHECK (attempts >= 0 AND attempts <= max_attempts),
    CONSTRAINT import_jobs_max_attempts_check
        CHECK (max_attempts BETWEEN 1 AND 1000),
    -- A pending job always has an attempt left, so a claim can never break the check above.
    CONSTRAINT import_jobs_pending_attempts_check
        CHECK (status <> 'pending' OR attempts < max_attempts),
    CONSTRAINT import_jobs_timeout_check
        CHECK (timeout > interval '0' AND timeout <= interval '7 days'),
    CONSTRAINT import_jobs_dedup_key_check
        CHECK (dedup_key IS NULL OR length(dedup_key) BETWEEN 1 AND 500),
    -- A lease exists exactly while the job runs.
    CONSTRAINT import_jobs_lease_check
        CHECK ((status = 'running') = (locked_by IS NOT NULL AND locked_until IS NOT NULL)),
    CONSTRAINT import_jobs_finished_check
        CHECK ((status IN ('completed', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    CONSTRAINT import_jobs_counters_check
        CHECK (rows_done >= 0 AND rows_failed >= 0 AND bytes_read >= 0
               AND (rows_total IS NULL OR rows_total >= 0))
);

COMMENT ON TABLE public.import_jobs IS 'importd: one row per import job';
COMMENT ON COLUMN public.import_jobs.priority IS 'smaller runs first';
COMMENT ON COLUMN public.import_jobs.locked_by IS 'the daemon holding the lease (host:pid:random)';

-- Serves the claim: runnable jobs in claim order. Partial, so finished jobs cost nothing.
CREATE INDEX import_jobs_claim_idx
    ON public.import_jobs (priority, run_at, id)
    WHERE status = 'pending';

-- Serves "when is the next scheduled job due?" for the worker's timer.
CREATE INDEX import_jobs_run_at_idx
    ON public.import_jobs (run_at)
    WHERE status = 'pending';

-- Serves the rescue of expired leases.
CREATE INDEX import_jobs_rescue_idx
    ON public.import_jobs (locked_until)
    WHERE status = 'running';

-- At most one unfinished job per dedup key; a finished job frees its key.
CREATE UNIQUE INDEX import_jobs_dedup_key_idx
    ON public.import_jobs (dedup_key)
    WHERE dedup_key IS NOT NULL AND status IN ('pending', 'running');

-- Serves pruning and "failures in the last hour".
CREATE INDEX import_jobs_finished_idx
    ON public.import_jobs (finished_at)
    WHERE finished_at IS NOT NULL;

CREATE TABLE public.import_job_errors (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id       bigint      NOT NULL REFERENCES public.import_jobs (id) ON DELETE CASCADE,
    attempt      integer     NOT NULL,
    line_number  bigint,
    message      text        NOT NULL,
    raw_record   text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX import_job_errors_job_idx ON public.import_job_errors (job_id, line_number);

COMMENT ON TABLE public.import_job_errors IS 'importd: rows an import rejected, by source line';

-- pg_notify on channel 'importd' with the queue as payload. PostgreSQL folds identical
-- notifications of one transaction into one and delivers them at commit only.
CREATE FUNCTION public.notify_process_import_jobs_async(p_queue text DEFAULT 'default')
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pg_catalog.pg_notify('importd', p_queue);
END;
$$;

CREATE FUNCTION public.trigger_import_job_processing()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Only a row that becomes pending (or is rescheduled) is news to the daemons.
    IF TG_OP = 'UPDATE' AND OLD.status = 'pending' AND OLD.run_at = NEW.run_at THEN
        RETURN NULL;
    END IF;
    PERFORM public.notify_process_import_jobs_async(NEW.queue);
    RETURN NULL;
END;
$$;

REVOKE ALL ON FUNCTION public.notify_process_import_jobs_async(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.trigger_import_job_processing() FROM PUBLIC;

-- The WHEN clause keeps the hot paths (claims, completions, progress) from calling
-- PL/pgSQL at all: only rows whose new status is pending reach the function.
CREATE TRIGGER trigger_process_import_jobs
    AFTER INSERT OR UPDATE ON public.import_jobs
    FOR EACH ROW
    WHEN (NEW.status = 'pending')
    EXECUTE FUNCTION public.trigger_import_job_processing();
