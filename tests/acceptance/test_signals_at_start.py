"""A signal while the daemon starts: it ends the start cleanly, with the documented exit
code and a log line, instead of the signal's default action killing the process (143)."""

from __future__ import annotations

import signal

import pytest

from tests.helpers import StartDaemon

# Nothing listens on port 1: every connection is refused at once, and refused is a
# transient failure the daemon keeps retrying at start (60 s for run, 10 s for drain).
REFUSED = "postgresql://postgres@127.0.0.1:1/importd"


@pytest.mark.parametrize(("command", "code"), [("run", 0), ("drain", 12)])
async def test_a_signal_while_the_database_is_unreachable_ends_the_start_cleanly(
    daemons: StartDaemon, command: str, code: int
) -> None:
    proc = daemons(command=command, target=REFUSED)
    await proc.wait_for_event("db_retry", timeout=20)
    proc.signal(signal.SIGTERM)
    assert await proc.wait_exit(timeout=10) == code
    assert proc.saw("shutdown_requested", reason="SIGTERM")
    assert proc.saw("daemon_stopped", before_serving=True, exit_code=code)
