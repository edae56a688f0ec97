-- importd schema, version 4: rows that cannot stop a daemon, claims that take only the
-- kinds a daemon serves, and a registry of the live daemons.

-- Every timestamp of a job is finite. "cannot subtract infinite timestamps" in a claim or
-- in "when is the next job due?" stopped every daemon while such a row existed; now the
-- row is refused at insert (or update) with the constraint's name. NOT VALID: adding the
-- constraint scans nothing; the UPDATE below mends every existing row first (the ACCESS
-- EXCLUSIVE lock the ALTER takes keeps new ones out until this migration commits), so the
-- constraint holds for every row all the same. Some NULL columns are NULL by design: a
-- NULL makes the check pass.
ALTER TABLE public.import_jobs
    ADD CONSTRAINT import_jobs_run_at_check CHECK (isfinite(run_at)) NOT VALID;
ALTER TABLE public.import_jobs
    ADD CONSTRAINT import_jobs_times_check
        CHECK (isfinite(created_at) AND isfinite(updated_at) AND isfinite(started_at)
               AND isfinite(finished_at) AND isfinite(locked_until)) NOT VALID;

-- A job due at '-infinity' is due since it was created; one due at 'infinity' waits for
-- the last moment every client can read (a job parked on purpose stays parked). A lease
-- until 'infinity' ends now, so the rescuer hands the job back.
UPDATE public.import_jobs
SET run_at       = CASE WHEN isfinite(run_at) THEN run_at
                        WHEN run_at > 'epoch' THEN timestamptz '9999-12-31 23:59:59+00'
                        WHEN isfinite(created_at) THEN least(created_at, now())
                        ELSE now() END,
    created_at   = CASE WHEN isfinite(created_at) THEN created_at ELSE now() END,
    updated_at   = now(),
    started_at   = CASE WHEN isfinite(started_at) THEN started_at END,
    finished_at  = CASE WHEN finished_at IS NULL OR isfinite(finished_at) THEN finished_at
                        ELSE now() END,
    locked_until = CASE WHEN locked_until IS NULL OR isfinite(locked_until) THEN locked_until
                        ELSE now() END
WHERE NOT (isfinite(run_at) AND isfinite(created_at) AND isfinite(updated_at)
           AND coalesce(isfinite(started_at), true) AND coalesce(isfinite(finished_at), true)
           AND coalesce(isfinite(locked_until), true));

-- A rate limit's schedule may start at '-infinity' (idle), never end at 'infinity'.
ALTER TABLE public.importd_rate_limits
    ADD CONSTRAINT importd_rate_limits_tat_check CHECK (tat < 'infinity') NOT VALID;
UPDATE public.importd_rate_limits SET tat = '-infinity' WHERE tat = 'infinity';

-- The live daemons: each registers at start, refreshes last_seen every few seconds,
-- deletes its row on a clean exit; a row not refreshed for a while is pruned by the
-- others. `importd status` lists them and names the pending kinds no live daemon serves.
CREATE TABLE public.importd_daemons (
    name        text        PRIMARY KEY,   -- the worker id, as in import_jobs.locked_by
    host        text        NOT NULL,
    pid         int         NOT NULL,
    version     text        NOT NULL,
    kinds       text[]      NOT NULL,      -- the kinds it has handlers for (and claims)
    queues      text[],                    -- the queues it claims from; NULL: every queue
    started_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT importd_daemons_times_check CHECK (isfinite(started_at) AND isfinite(last_seen))
);

COMMENT ON TABLE public.importd_daemons IS
    'importd: the running daemons, their kinds and queues (refreshed every few seconds)';

-- The tenant-fair claim of migration 0003, with its cached-plan variants now for a
-- daemon's usual claim: a daemon always names its kinds (it claims only the kinds it has
-- handlers for), so the variants filter on p_kinds rather than requiring it to be NULL.
-- A NULL p_kinds (every kind) still works, through the general statements.
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
    -- work at all (an upper bound that spares a probe when the levels run out).
    IF simple AND p_queues IS NULL THEN
        SELECT (SELECT min(j.priority) FROM public.import_jobs AS j
                 WHERE j.status = 'pending' AND j.run_at <= now()
                   AND j.kind = ANY (p_kinds)),
               (SELECT max(j.priority) FROM public.import_jobs AS j
                 WHERE j.status = 'pending' AND j.kind = ANY (p_kinds))
          INTO level, top_level;
    ELSIF simple THEN
        SELECT (SELECT min(j.priority) FROM public.import_jobs AS j
                 WHERE j.status = 'pending' AND j.run_at <= now() AND j.queue = one_q
                   AND j.kind = ANY (p_kinds)),
               (SELECT max(j.priority) FROM public.import_jobs AS j
                 WHERE j.status = 'pending' AND j.queue = one_q
                   AND j.kind = ANY (p_kinds))
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
