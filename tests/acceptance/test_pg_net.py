"""Moving from the original pg_net design: `importd migrate` replaces its trigger and
functions (which called net.http_post on every insert) and keeps its rows aside."""

from __future__ import annotations

import asyncio
from typing import Any

import importd
from importd import db
from tests.helpers import Notifications, run_importd
from tests.integration.test_migrate import VERIFY_FUNCTIONS, VERIFY_TRIGGER

# A stand-in for pg_net: net.http_post records each call instead of sending it.
PG_NET = """
CREATE SCHEMA net;
CREATE TABLE net.calls (url text, body jsonb, at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION net.http_post(url text, body jsonb DEFAULT '{}'::jsonb,
                              params jsonb DEFAULT '{}'::jsonb,
                              headers jsonb DEFAULT '{}'::jsonb,
                              timeout_milliseconds int DEFAULT 5000)
RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO net.calls (url, body) VALUES (url, body) RETURNING 1::bigint
$$;
"""

# The original design, as its setup script created it.
ORIGINAL = """
CREATE TABLE public.import_jobs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    file_path text NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX import_jobs_status_idx ON public.import_jobs (status);
CREATE FUNCTION public.notify_process_import_jobs_async() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    PERFORM net.http_post(
        url := 'https://project.supabase.co/functions/v1/process-import-jobs',
        body := '{}'::jsonb,
        headers := '{"Authorization": "Bearer service-role-key"}'::jsonb,
        timeout_milliseconds := 300000);
END;
$$;
CREATE FUNCTION public.trigger_import_job_processing() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    PERFORM public.notify_process_import_jobs_async();
    RETURN NEW;
END;
$$;
CREATE TRIGGER trigger_process_import_jobs AFTER INSERT ON public.import_jobs
    FOR EACH ROW EXECUTE FUNCTION public.trigger_import_job_processing();
"""


async def test_migrate_replaces_the_pg_net_trigger_and_functions(empty_dsn: str) -> None:
    conn: Any = await db.connect(empty_dsn)
    listener = None
    try:
        await conn.execute(PG_NET + ORIGINAL)
        await conn.execute("INSERT INTO import_jobs (file_path) VALUES ('uploads/a.csv')")
        assert await conn.fetchval("SELECT count(*) FROM net.calls") == 1  # the stand-in works

        done = await asyncio.to_thread(
            run_importd, "migrate", "--dsn", empty_dsn, "--log-format", "json"
        )
        assert done.returncode == 0, done.stderr
        assert '"pg_net_design_replaced"' in done.stderr
        assert "import_jobs_pg_net" in done.stderr

        # The old rows are kept aside; the trigger and functions are importd's now.
        assert await conn.fetchval("SELECT file_path FROM import_jobs_pg_net") == "uploads/a.csv"
        bodies = await conn.fetch(
            "SELECT p.oid::regprocedure::text AS f, prosrc FROM pg_proc p "
            "WHERE proname IN ('notify_process_import_jobs_async', "
            "'trigger_import_job_processing') ORDER BY 1"
        )
        assert [r["f"] for r in bodies] == [
            "notify_process_import_jobs_async(text)",
            "trigger_import_job_processing()",
        ]
        assert not any("net." in r["prosrc"] for r in bodies)
        trigger = await conn.fetch(VERIFY_TRIGGER)
        assert [(r["relname"], r["proname"]) for r in trigger] == [
            ("import_jobs", "trigger_import_job_processing")
        ]
        assert {
            r["proname"]: r["security_definer"] for r in await conn.fetch(VERIFY_FUNCTIONS)
        } == {"notify_process_import_jobs_async": True, "trigger_import_job_processing": True}

        # An insert now notifies the daemons and calls nothing over HTTP.
        listener = await Notifications().start(empty_dsn)
        await importd.enqueue(
            conn, "csv", {"source": "file:///srv/uploads/a.csv", "table": "customers"}
        )
        await conn.execute("INSERT INTO import_jobs (kind, payload) VALUES ('noop', '{}')")
        assert await listener.settle() == ["default", "default"]
        assert await conn.fetchval("SELECT count(*) FROM net.calls") == 1
        # The old zero-argument call still works for verification scripts.
        await conn.execute("SELECT public.notify_process_import_jobs_async()")
        again = await asyncio.to_thread(run_importd, "migrate", "--dsn", empty_dsn)
        assert again.returncode == 0 and "already current" in again.stdout
        assert "pg_net_design_replaced" not in again.stderr
    finally:
        if listener is not None:
            await listener.close()
        await conn.close()
