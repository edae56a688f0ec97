-- importd schema, version 5: bulk enqueue at insert speed.
--
-- Inserts announce their jobs with one statement-level trigger instead of one PL/pgSQL
-- call per row. A row trigger cost about as much as the insert itself (batches of 1,000:
-- roughly 40 % of a bulk enqueue, see bench/daemon.py); the statement trigger reads the
-- inserted rows from a transition table and sends one pg_notify per distinct queue, so a
-- batch costs one function call whatever its size. Updates that make a job pending again
-- (retries, rescues, `importd retry`) are few and keep the row trigger.
--
-- The kind and queue checks lose their bounded repetitions ({0,99}, {0,62}): PostgreSQL's
-- regex engine unrolls a bound into that many states, which made each of the two checks
-- cost as much as inserting the row (about 3.5 µs a row each; a length() test and an
-- unbounded class cost 0.6). The rule is the same: the old and new expressions agree on
-- every string (tests/test_schema.py). The constraints keep their names.
--
-- The names of the original design stay: trigger_process_import_jobs (now the INSERT
-- trigger) runs trigger_import_job_processing(), which sends through
-- notify_process_import_jobs_async(). The importd.notify switch (migration 0003) holds for
-- both triggers.

CREATE OR REPLACE FUNCTION public.trigger_import_job_processing()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        -- importd_new_jobs: the rows this INSERT (or COPY) added. PostgreSQL folds
        -- identical notifications of a transaction into one and delivers them at commit.
        PERFORM public.notify_process_import_jobs_async(d.queue)
           FROM (SELECT DISTINCT n.queue FROM importd_new_jobs AS n
                  WHERE n.status = 'pending') AS d;
        RETURN NULL;
    END IF;
    -- Only a row that becomes pending (or is rescheduled) is news to the daemons.
    IF TG_OP = 'UPDATE' AND OLD.status = 'pending' AND OLD.run_at = NEW.run_at THEN
        RETURN NULL;
    END IF;
    PERFORM public.notify_process_import_jobs_async(NEW.queue);
    RETURN NULL;
END;
$$;

REVOKE ALL ON FUNCTION public.trigger_import_job_processing() FROM PUBLIC;

DROP TRIGGER trigger_process_import_jobs ON public.import_jobs;

CREATE TRIGGER trigger_process_import_jobs
    AFTER INSERT ON public.import_jobs
    REFERENCING NEW TABLE AS importd_new_jobs
    FOR EACH STATEMENT
    WHEN (current_setting('importd.notify', true) IS DISTINCT FROM 'off')
    EXECUTE FUNCTION public.trigger_import_job_processing();

-- The WHEN clause keeps the hot paths (claims, completions, progress) from calling
-- PL/pgSQL at all: only rows whose new status is pending reach the function.
CREATE TRIGGER trigger_process_import_jobs_update
    AFTER UPDATE ON public.import_jobs
    FOR EACH ROW
    WHEN (NEW.status = 'pending'
          AND current_setting('importd.notify', true) IS DISTINCT FROM 'off')
    EXECUTE FUNCTION public.trigger_import_job_processing();

ALTER TABLE public.import_jobs
    DROP CONSTRAINT import_jobs_kind_check,
    DROP CONSTRAINT import_jobs_queue_check,
    ADD CONSTRAINT import_jobs_kind_check
        CHECK (kind ~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]*$' AND length(kind) <= 100),
    -- The queue is the NOTIFY payload and a metrics label: keep it short and plain.
    ADD CONSTRAINT import_jobs_queue_check
        CHECK (queue ~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]*$' AND length(queue) <= 63);
