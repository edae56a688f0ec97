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

-- Claims whose cost does not depend on statistics.
--
-- A claim must cost the same on a table that was never analyzed (bulk-loaded a second
-- ago), on one whose statistics say nothing is pending (analyzed while it held only
-- finished jobs), and on a warm one. Without statistics the planner guesses that a
-- handful of rows are pending; its cheapest plan for "the first N pending jobs in claim
-- order" then reads every pending row (a bitmap scan, or the wrong index) and sorts them:
-- each claim, and each probe of the fair walk, cost 10-25 ms on 20,000 pending jobs, and
-- PL/pgSQL kept that plan for the session. A fresh backlog drained at 0.05-0.1x the floor
-- (bench/daemon.py).
--
-- Measured against the alternatives (see the README, "Claims without statistics"), the
-- claim functions carry planner settings scoped to themselves: no sequential scan, no
-- bitmap scan, no sort (full or incremental), and no JIT (a disabled plan node adds 1e10 to
-- a plan's cost, which would otherwise make PostgreSQL JIT-compile a 16-row update: half
-- a second per claim). Every claim statement is written so that an index of migration
-- 0001/0003 returns the rows in claim order (import_jobs_claim_idx for the plain claim,
-- import_jobs_fair_idx for the fair walk), so with those plans disabled the ordered index
-- scan is the only plan left, whatever the statistics say; the few sorts left (the final
-- order of at most p_limit rows) still run, as a disabled plan that has no alternative.
-- The settings reach only the statements inside the functions: handlers, imports and
-- operators' queries plan as usual. An ANALYZE triggered by importd was the other
-- candidate: it needs the table's owner, costs a sample of the table on every new backlog,
-- and leaves the first claims (and a backlog that grows faster than the trigger fires)
-- unprotected.
-- The fair claim of migration 0004, with the settings, its two level probes reshaped
-- (see "The first priority level" below), and one probe fewer per round when a level
-- runs out (a sparse queue: 5 statements instead of 7 for a claim that finds one job);
-- nothing else changed.
--
-- The three edits, for whoever changes this function next: (1) the SET clauses
-- enable_seqscan / enable_bitmapscan / enable_sort / enable_incremental_sort off and jit
-- off; (2) the level probes as
-- ORDER BY j.priority [DESC] LIMIT 1 subqueries instead of min() / max(); (3) on a probe
-- that finds nothing right after wrapping (cursor back at ''), `more := false`.
CREATE OR REPLACE FUNCTION public.importd_claim_fair(
    p_limit        integer,
    p_worker       text,
    p_margin_s     float8,
    p_queues       text[],
    p_kinds        text[],
    p_skip_queues  text[],
    p_skip_kinds   text[],
    p_tenant_cap   integer,
    p_after_queue  text,
    p_after_tenant text
)
RETURNS SETOF public.import_jobs
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- Planner settings for the statements below: see the top of this section.
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_sort = off
SET enable_incremental_sort = off
SET jit = off
AS $$
DECLARE
    picked     bigint[] := '{}';
    level      integer;
    top_level  integer;
    cur_q      text := coalesce(p_after_queue, '');
    cur_t      text := coalesce(p_after_tenant, '');
    start_q    text;
    start_t    text;
    nq         text;
    nt         text;
    wrapped    boolean;
    per_pair   integer := 1;
    got        integer;
    round_got  integer;
    pairs_fed  integer;
    more       boolean;  -- some pair filled its share this round: it may hold more
    lone       boolean;  -- the pair served is the only one with work
    room       integer;
    cap_names  text[] := '{}';
    cap_counts integer[] := '{}';
    pos        integer;
    jid        bigint;
    -- A daemon's claim: its kinds (always given: those it has handlers for), no
    -- exclusions, every queue or one. The hot statements below then come in variants
    -- without optional filters, whose plans PostgreSQL caches for the session (an
    -- "x IS NULL OR ..." filter makes it plan the statement on every call).
    simple     boolean := p_kinds IS NOT NULL AND p_skip_queues IS NULL
                          AND p_skip_kinds IS NULL
                          AND (p_queues IS NULL OR cardinality(p_queues) = 1);
    one_q      text := p_queues[1];
BEGIN
    IF p_limit IS NULL OR p_limit <= 0 THEN
        RETURN;
    END IF;
    IF p_tenant_cap IS NOT NULL THEN
        -- 'importd' + 0x01 as a bigint: one lock for every capped claim of every daemon.
        PERFORM pg_advisory_xact_lock(7596553568519897345);
        SELECT coalesce(array_agg(r.tenant_id), '{}'), coalesce(array_agg(r.n), '{}')
          INTO cap_names, cap_counts
          FROM (SELECT j.tenant_id, count(*)::integer AS n
                  FROM public.import_jobs AS j
                 WHERE j.status = 'running' AND j.tenant_id IS NOT NULL
                 GROUP BY j.tenant_id) AS r;
    END IF;

    -- The first priority level with runnable work, and the last level with any pending
    -- work at all (an upper bound that spares a probe when the levels run out). Written
    -- as ORDER BY ... LIMIT 1 rather than min() / max(): with sorts disabled only an index
    -- in priority order (import_jobs_claim_idx) can answer them, reading from one end; an
    -- aggregate could read every pending row of another index (0005).
    IF simple AND p_queues IS NULL THEN
        SELECT (SELECT j.priority FROM public.import_jobs AS j
                 WHERE j.status = 'pending' AND j.run_at <= now()
                   AND j.kind = ANY (p_kinds)
                 ORDER BY j.priority LIMIT 1),
               (SELECT j.priority FROM public.import_jobs AS j
                 WHERE j.status = 'pending' AND j.kind = ANY (p_kinds)
                 ORDER BY j.priority DESC LIMIT 1)
          INTO level, top_level;
    ELSIF simple THEN
        SELECT (SELECT j.priority FROM public.import_jobs AS j
                 WHERE j.status = 'pending' AND j.run_at <= now() AND j.queue = one_q
                   AND j.kind = ANY (p_kinds)
                 ORDER BY j.priority LIMIT 1),
               (SELECT j.priority FROM public.import_jobs AS j
                 WHERE j.status = 'pending' AND j.queue = one_q
                   AND j.kind = ANY (p_kinds)
                 ORDER BY j.priority DESC LIMIT 1)
          INTO level, top_level;
    ELSE
        SELECT (SELECT j.priority
                  FROM public.import_jobs AS j
                 WHERE j.status = 'pending'
                   AND j.run_at <= now()
                   AND (p_queues IS NULL OR j.queue = ANY (p_queues))
                   AND (p_kinds IS NULL OR j.kind = ANY (p_kinds))
                   AND (p_skip_queues IS NULL OR j.queue <> ALL (p_skip_queues))
                   AND (p_skip_kinds IS NULL OR j.kind <> ALL (p_skip_kinds))
                 ORDER BY j.priority LIMIT 1),
               (SELECT j.priority
                  FROM public.import_jobs AS j
                 WHERE j.status = 'pending'
                   AND (p_queues IS NULL OR j.queue = ANY (p_queues))
                   AND (p_skip_queues IS NULL OR j.queue <> ALL (p_skip_queues))
                 ORDER BY j.priority DESC LIMIT 1)
          INTO level, top_level;
    END IF;
    IF level IS NULL THEN
        RETURN;
    END IF;

    <<levels>>
    LOOP
        per_pair := 1;

        <<rounds>>
        LOOP
            start_q := cur_q;
            start_t := cur_t;
            wrapped := false;
            round_got := 0;
            pairs_fed := 0;
            more := false;

            <<pairs>>
            LOOP
                -- The first runnable job of this level after the cursor, in index order:
                -- the oldest job of the next pair that has one. One probe finds the pair
                -- and its job together.
                IF simple AND p_queues IS NULL THEN
                    SELECT j.id, j.queue, coalesce(j.tenant_id, '') INTO jid, nq, nt
                      FROM public.import_jobs AS j
                     WHERE j.status = 'pending'
                       AND (j.queue, coalesce(j.tenant_id, '')) > (cur_q, cur_t)
                       AND j.priority = level
                       AND j.run_at <= now()
                       AND j.id <> ALL (picked)  -- ours already: locked, still pending
                       AND j.kind = ANY (p_kinds)
                     ORDER BY j.queue, coalesce(j.tenant_id, ''), j.priority, j.run_at, j.id
                     LIMIT 1
                     FOR UPDATE SKIP LOCKED;
                ELSIF simple THEN
                    SELECT j.id, j.queue, coalesce(j.tenant_id, '') INTO jid, nq, nt
                      FROM public.import_jobs AS j
                     WHERE j.status = 'pending'
                       AND j.queue = one_q
                       AND (j.queue, coalesce(j.tenant_id, '')) > (cur_q, cur_t)
                       AND j.priority = level
                       AND j.run_at <= now()
                       AND j.id <> ALL (picked)
                       AND j.kind = ANY (p_kinds)
                     ORDER BY j.queue, coalesce(j.tenant_id, ''), j.priority, j.run_at, j.id
                     LIMIT 1
                     FOR UPDATE SKIP LOCKED;
                ELSE
                    SELECT j.id, j.queue, coalesce(j.tenant_id, '') INTO jid, nq, nt
                      FROM public.import_jobs AS j
                     WHERE j.status = 'pending'
                       AND (j.queue, coalesce(j.tenant_id, '')) > (cur_q, cur_t)
                       AND j.priority = level
                       AND j.run_at <= now()
                       AND j.id <> ALL (picked)
                       AND (p_queues IS NULL OR j.queue = ANY (p_queues))
                       AND (p_kinds IS NULL OR j.kind = ANY (p_kinds))
                       AND (p_skip_queues IS NULL OR j.queue <> ALL (p_skip_queues))
                       AND (p_skip_kinds IS NULL OR j.kind <> ALL (p_skip_kinds))
                     ORDER BY j.queue, coalesce(j.tenant_id, ''), j.priority, j.run_at, j.id
                     LIMIT 1
                     FOR UPDATE SKIP LOCKED;
                END IF;
                IF NOT FOUND THEN
                    IF wrapped AND cur_q = '' AND cur_t = '' THEN
                        -- Wrapped, and nothing unpicked from the start of the index on:
                        -- this level is exhausted, another round would only probe
                        -- again (0005).
                        more := false;
                    END IF;
                    EXIT pairs WHEN wrapped OR (start_q = '' AND start_t = '');
                    wrapped := true;  -- past the last pair: go on from the first
                    cur_q := '';
                    cur_t := '';
                    CONTINUE pairs;
                END IF;
                -- Once round: back past where this round started. (The row just locked
                -- stays pending; it is released when the claim commits.)
                EXIT pairs WHEN wrapped AND (nq, nt) > (start_q, start_t);
                cur_q := nq;
                cur_t := nt;

                room := least(per_pair, p_limit - cardinality(picked));
                lone := wrapped AND nq = start_q AND nt = start_t AND round_got = 0;
                IF lone THEN
                    -- Round the whole walk and back without another pair: this pair is
                    -- the only one with work, so it may fill every remaining slot.
                    room := p_limit - cardinality(picked);
                END IF;
                IF p_tenant_cap IS NOT NULL AND nt <> '' THEN
                    pos := array_position(cap_names, nt);
                    room := least(room, p_tenant_cap - coalesce(cap_counts[pos], 0));
                END IF;
                CONTINUE pairs WHEN room <= 0;  -- at its cap: on to the next pair

                picked := picked || jid;
                got := 1;
                IF room > 1 AND simple THEN
                    FOR jid IN
                        SELECT j.id
                          FROM public.import_jobs AS j
                         WHERE j.status = 'pending'
                           AND j.queue = nq
                           AND coalesce(j.tenant_id, '') = nt
                           AND j.priority = level
                           AND j.run_at <= now()
                           AND j.id <> ALL (picked)
                           AND j.kind = ANY (p_kinds)
                         ORDER BY j.priority, j.run_at, j.id
                         LIMIT room - 1
                         FOR UPDATE SKIP LOCKED
                    LOOP
                        picked := picked || jid;
                        got := got + 1;
                    END LOOP;
                ELSIF room > 1 THEN
                    FOR jid IN
                        SELECT j.id
                          FROM public.import_jobs AS j
                         WHERE j.status = 'pending'
                           AND j.queue = nq
                           AND coalesce(j.tenant_id, '') = nt
                           AND j.priority = level
                           AND j.run_at <= now()
                           AND j.id <> ALL (picked)
                           AND (p_kinds IS NULL OR j.kind = ANY (p_kinds))
                           AND (p_skip_kinds IS NULL OR j.kind <> ALL (p_skip_kinds))
                         ORDER BY j.priority, j.run_at, j.id
                         LIMIT room - 1
                         FOR UPDATE SKIP LOCKED
                    LOOP
                        picked := picked || jid;
                        got := got + 1;
                    END LOOP;
                END IF;
                more := more OR got = room;
                round_got := round_got + got;
                pairs_fed := pairs_fed + 1;
                IF p_tenant_cap IS NOT NULL AND nt <> '' THEN
                    IF pos IS NULL THEN
                        cap_names := cap_names || nt;
                        cap_counts := cap_counts || got;
                    ELSE
                        cap_counts[pos] := cap_counts[pos] + got;
                    END IF;
                END IF;
                EXIT pairs WHEN lone;  -- nothing else to visit
                EXIT levels WHEN cardinality(picked) >= p_limit;
            END LOOP pairs;

            -- A round in which no pair filled its share: this level is exhausted (or
            -- capped).
            EXIT rounds WHEN NOT more;
            -- Share the remaining slots among the pairs that still had work.
            per_pair := greatest(1, (p_limit - cardinality(picked)) / pairs_fed);
        END LOOP rounds;

        EXIT levels WHEN level >= top_level;
        -- The next priority level with runnable work.
        SELECT j.priority INTO level
          FROM public.import_jobs AS j
         WHERE j.status = 'pending'
           AND j.run_at <= now()
           AND j.priority > level
           AND (p_queues IS NULL OR j.queue = ANY (p_queues))
           AND (p_kinds IS NULL OR j.kind = ANY (p_kinds))
           AND (p_skip_queues IS NULL OR j.queue <> ALL (p_skip_queues))
           AND (p_skip_kinds IS NULL OR j.kind <> ALL (p_skip_kinds))
         ORDER BY j.priority
         LIMIT 1;
        EXIT levels WHEN NOT FOUND;
    END LOOP levels;

    IF cardinality(picked) = 0 THEN
        RETURN;
    END IF;
    -- In the order picked: the caller's next cursor is the last job's pair.
    RETURN QUERY
        WITH claimed AS (
            UPDATE public.import_jobs AS j
               SET status       = 'running',
                   attempts     = j.attempts + 1,
                   locked_by    = p_worker,
                   locked_until = now() + j.timeout + make_interval(secs => p_margin_s),
                   started_at   = now(),
                   updated_at   = now()
             WHERE j.id = ANY (picked)
            RETURNING j.*
        )
        SELECT * FROM claimed ORDER BY array_position(picked, claimed.id);
END;
$$;

-- The plain claim (daemons run with --no-fair, and `importd drain --no-fair`), moved into
-- a function so that the same settings hold for it. The statement is the one
-- sql/queries/claim_jobs.sql held; claim_jobs.sql now selects from this function.
CREATE FUNCTION public.importd_claim_jobs(
    p_limit        integer,
    p_worker       text,
    p_queues       text[],
    p_kinds        text[],
    p_margin_s     float8,
    p_skip_queues  text[],
    p_skip_kinds   text[]
)
RETURNS SETOF public.import_jobs
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_sort = off
SET enable_incremental_sort = off
SET jit = off
AS $$
BEGIN
    RETURN QUERY
        WITH next AS (
            SELECT n.id
              FROM public.import_jobs AS n
             WHERE n.status = 'pending'
               AND n.run_at <= now()
               AND (p_queues IS NULL OR n.queue = ANY (p_queues))
               AND (p_kinds IS NULL OR n.kind = ANY (p_kinds))
               AND (p_skip_queues IS NULL OR n.queue <> ALL (p_skip_queues))
               AND (p_skip_kinds IS NULL OR n.kind <> ALL (p_skip_kinds))
             ORDER BY n.priority, n.run_at, n.id
             LIMIT p_limit
             FOR UPDATE SKIP LOCKED
        )
        UPDATE public.import_jobs AS j
           SET status       = 'running',
               attempts     = j.attempts + 1,
               locked_by    = p_worker,
               locked_until = now() + j.timeout + make_interval(secs => p_margin_s),
               started_at   = now(),
               updated_at   = now()
          FROM next
         WHERE j.id = next.id
        RETURNING j.*;
END;
$$;

REVOKE ALL ON FUNCTION public.importd_claim_jobs(
    integer, text, text[], text[], float8, text[], text[]) FROM PUBLIC;
