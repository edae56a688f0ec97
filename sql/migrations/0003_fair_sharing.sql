-- importd schema, version 3: fair sharing between tenants, rate limits that hold across
-- daemons, and a switch for the notification trigger.

-- The tenant-fair claim walks the (queue, tenant) pairs that have pending jobs in this
-- index's order, one probe per pair it serves, so its cost follows the jobs it claims, not
-- the number of tenants or pending rows. A job without a tenant belongs to the tenant ''
-- (the tenant_id check forbids '' as a real one).
CREATE INDEX import_jobs_fair_idx
    ON public.import_jobs (queue, (coalesce(tenant_id, '')), priority, run_at, id)
    WHERE status = 'pending';

-- Running jobs per tenant, for the per-tenant concurrency cap.
CREATE INDEX import_jobs_running_tenant_idx
    ON public.import_jobs (tenant_id)
    WHERE status = 'running' AND tenant_id IS NOT NULL;

-- One row per rate limit ('queue:<name>' or 'kind:<name>'), shared by every daemon. The
-- generic cell rate algorithm needs a single timestamp: the theoretical arrival time of
-- the next job. A claim under a limit locks the row, takes what the limit allows now, and
-- moves the timestamp on by what it actually claimed.
CREATE TABLE public.importd_rate_limits (
    key  text        PRIMARY KEY,
    tat  timestamptz NOT NULL DEFAULT '-infinity',
    CONSTRAINT importd_rate_limits_key_check CHECK (key ~ '^(queue|kind):.{1,100}$')
);

COMMENT ON TABLE public.importd_rate_limits IS
    'importd: rate limit state shared by the daemons (GCRA theoretical arrival time)';

-- The tenant-fair claim. Leases up to p_limit runnable jobs to p_worker and returns them.
--
-- Order: the smallest priority first; within a priority, round-robin over the (queue,
-- tenant) pairs that have runnable jobs, starting after the caller's cursor
-- (p_after_queue, p_after_tenant) and wrapping around; oldest first within a pair. The
-- first round takes one job per pair; later rounds (when slots remain) share what is left
-- evenly among the pairs that still had work.
--
-- p_tenant_cap: at most this many running jobs per tenant (NULL: no cap), counted over
-- every daemon. Capped claims are serialized by a transaction advisory lock, and each
-- statement below reads a fresh snapshot, so a claim sees every claim committed before it:
-- the cap is exact, not approximate.
--
-- Not SECURITY DEFINER: it runs with the daemon's own rights.
CREATE FUNCTION public.importd_claim_fair(
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
    -- No kind filter, no exclusions, every queue or one: the hot statements below then
    -- come in variants without optional filters, whose plans PostgreSQL caches for the
    -- session (an "x IS NULL OR ..." filter makes it plan the statement on every call).
    simple     boolean := p_kinds IS NULL AND p_skip_queues IS NULL AND p_skip_kinds IS NULL
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
    -- work at all (an upper bound that spares a probe when the levels run out).
    IF simple AND p_queues IS NULL THEN
        SELECT (SELECT min(j.priority) FROM public.import_jobs AS j
                 WHERE j.status = 'pending' AND j.run_at <= now()),
               (SELECT max(j.priority) FROM public.import_jobs AS j
                 WHERE j.status = 'pending')
          INTO level, top_level;
    ELSIF simple THEN
        SELECT (SELECT min(j.priority) FROM public.import_jobs AS j
                 WHERE j.status = 'pending' AND j.run_at <= now() AND j.queue = one_q),
               (SELECT max(j.priority) FROM public.import_jobs AS j
                 WHERE j.status = 'pending' AND j.queue = one_q)
          INTO level, top_level;
    ELSE
        SELECT (SELECT min(j.priority)
                  FROM public.import_jobs AS j
                 WHERE j.status = 'pending'
                   AND j.run_at <= now()
                   AND (p_queues IS NULL OR j.queue = ANY (p_queues))
                   AND (p_kinds IS NULL OR j.kind = ANY (p_kinds))
                   AND (p_skip_queues IS NULL OR j.queue <> ALL (p_skip_queues))
                   AND (p_skip_kinds IS NULL OR j.kind <> ALL (p_skip_kinds))),
               (SELECT max(j.priority)
                  FROM public.import_jobs AS j
                 WHERE j.status = 'pending'
                   AND (p_queues IS NULL OR j.queue = ANY (p_queues))
                   AND (p_skip_queues IS NULL OR j.queue <> ALL (p_skip_queues)))
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

REVOKE ALL ON FUNCTION public.importd_claim_fair(
    integer, text, float8, text[], text[], text[], text[], integer, text, text) FROM PUBLIC;

-- The notification trigger can be switched off without DDL: with the setting
-- importd.notify = 'off' (per database, role or session), inserts send no NOTIFY and the
-- daemons find work by polling (run them with --no-listen). See the README's "High insert
-- rates".
DROP TRIGGER trigger_process_import_jobs ON public.import_jobs;
CREATE TRIGGER trigger_process_import_jobs
    AFTER INSERT OR UPDATE ON public.import_jobs
    FOR EACH ROW
    WHEN (NEW.status = 'pending'
          AND current_setting('importd.notify', true) IS DISTINCT FROM 'off')
    EXECUTE FUNCTION public.trigger_import_job_processing();
