-- importd schema, version 7: the fair claim at the plain claim's cost when one tenant
-- has work.
--
-- The tenant-fair claim (importd_claim_fair, 0003-0005) walks the (queue, tenant) pairs
-- that have pending jobs: a claim ran 5 statements (the level probes, a probe past the
-- cursor, one from the start of the index after wrapping, the batch, the update) where
-- the plain claim runs one. On a drain it cost about 0.4 ms more per claim than the plain
-- claim on a quiet machine, and the fair drain trailed --no-fair's (see the README,
-- "drain, cold").
--
-- When every pending job in the claim's scope belongs to one (queue, tenant) pair (no
-- tenants at all, or one; the common case), there is nothing to share: round-robin over
-- one pair is "oldest first within each priority", the plain claim's order. The function
-- now learns that first: the last pair with pending jobs, and whether any pending job
-- sorts before it (two backward reads of import_jobs_fair_idx, in one statement, that
-- never step over the dead entries a drain leaves at the start of a pair's range); then
-- it claims the pair's jobs in one statement: 2 statements instead of 5. Only a daemon's
-- own claim takes this path (its kinds given, no exclusions, every queue or one, no
-- per-tenant cap); several pairs, a cap (its lock and counts), exclusions (rate-limited
-- lanes) or several queues take the walk as before.
--
-- The probe looks at every pending job of the scope, runnable or scheduled, of any kind:
-- it can only see more pairs than the claim could take from, never fewer, so a claim it
-- sends down the fast path is one the walk would have answered the same way. A job of
-- another pair committed between the probe and the claim is left to the next claim, as
-- it would be had it committed a moment later.
--
-- The edits against 0005's body, for whoever changes this function next: the one-pair
-- path (from "IF simple AND p_tenant_cap IS NULL" to its "END IF;", before the cap's
-- lock) and its variables lq, lt, others; nothing else.
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
-- Planner settings for the statements below: see migration 0005.
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
    -- The fast path (0007): the last (queue, tenant) pair with pending jobs, and
    -- whether another pair has any.
    lq         text;
    lt         text;
    others     boolean;
BEGIN
    IF p_limit IS NULL OR p_limit <= 0 THEN
        RETURN;
    END IF;
    -- One pair has every pending job of this scope: claim its oldest runnable jobs,
    -- priority first, as the walk would (0007).
    IF simple AND p_tenant_cap IS NULL THEN
        -- The last pair with pending jobs, and whether any pending job sorts before that
        -- pair: two backward reads of import_jobs_fair_idx, one from its end, one from
        -- where the pair begins. The entries a drain leaves behind (claimed jobs, dead
        -- until a vacuum) sit at the start of their pair's range, where neither read goes
        -- (a forward read would step over every one of them).
        IF p_queues IS NULL THEN
            SELECT l.queue, l.tenant,
                   (SELECT o.queue
                      FROM public.import_jobs AS o
                     WHERE o.status = 'pending'
                       AND (o.queue, coalesce(o.tenant_id, '')) < (l.queue, l.tenant)
                     ORDER BY o.queue DESC, coalesce(o.tenant_id, '') DESC
                     LIMIT 1) IS NOT NULL
              INTO lq, lt, others
              FROM (SELECT j.queue, coalesce(j.tenant_id, '') AS tenant
                      FROM public.import_jobs AS j
                     WHERE j.status = 'pending'
                     ORDER BY j.queue DESC, coalesce(j.tenant_id, '') DESC
                     LIMIT 1) AS l;
        ELSE
            SELECT l.queue, l.tenant,
                   (SELECT o.queue
                      FROM public.import_jobs AS o
                     WHERE o.status = 'pending'
                       -- not "o.queue = one_q": the scan would then start from the
                       -- queue's end and read back over the pair's dead entries
                       AND o.queue >= one_q
                       AND (o.queue, coalesce(o.tenant_id, '')) < (l.queue, l.tenant)
                     ORDER BY o.queue DESC, coalesce(o.tenant_id, '') DESC
                     LIMIT 1) IS NOT NULL
              INTO lq, lt, others
              FROM (SELECT j.queue, coalesce(j.tenant_id, '') AS tenant
                      FROM public.import_jobs AS j
                     WHERE j.status = 'pending' AND j.queue = one_q
                     ORDER BY j.queue DESC, coalesce(j.tenant_id, '') DESC
                     LIMIT 1) AS l;
        END IF;
        IF NOT FOUND THEN
            RETURN;  -- nothing pending at all
        END IF;
        IF NOT others THEN
            RETURN QUERY
                WITH next AS (
                    SELECT n.id
                      FROM public.import_jobs AS n
                     WHERE n.status = 'pending'
                       AND n.queue = lq
                       AND coalesce(n.tenant_id, '') = lt
                       AND n.run_at <= now()
                       AND n.kind = ANY (p_kinds)
                     ORDER BY n.priority, n.run_at, n.id
                     LIMIT p_limit
                     FOR UPDATE SKIP LOCKED
                ), claimed AS (
                    UPDATE public.import_jobs AS j
                       SET status       = 'running',
                           attempts     = j.attempts + 1,
                           locked_by    = p_worker,
                           locked_until = now() + j.timeout
                                          + make_interval(secs => p_margin_s),
                           started_at   = now(),
                           updated_at   = now()
                      FROM next
                     WHERE j.id = next.id
                    RETURNING j.*
                )
                SELECT * FROM claimed ORDER BY claimed.priority, claimed.run_at, claimed.id;
            RETURN;
        END IF;
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
