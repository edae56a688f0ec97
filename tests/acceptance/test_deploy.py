"""The README's systemd recipe, run as written into a temporary root, then the daemon
started the way the unit starts it: an unprivileged (dynamic-like) user with the modes the
recipe left, the DSN under $CREDENTIALS_DIRECTORY, the import root readable through the
drop-in's supplementary group."""

from __future__ import annotations

import asyncio
import grp
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import importd
from tests.helpers import ROOT, wait_until

DYNAMIC_UID = 61999  # in systemd's DynamicUser= range, no passwd entry
STAND_IN_GROUP = "staff"  # a group that exists on Debian, standing in for importd-uploads


def recipe() -> list[str]:
    """The shell lines of the README's "Running under systemd" block."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Running under systemd") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line.strip()]


@pytest.fixture
def prefix() -> Iterator[Path]:
    # Under /tmp with a+rx, like a real / : the unprivileged user must reach it.
    root = Path(tempfile.mkdtemp(prefix="importd-root-"))
    os.chmod(root, 0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _reachable(path: Path) -> bool:
    """Whether every directory above ``path`` lets others in (the service's user)."""
    return all(os.stat(parent).st_mode & 0o001 for parent in path.parents)


def _venv(venv: Path) -> None:
    """A venv at ``venv`` whose ``importd`` runs this checkout, with an interpreter the
    unprivileged user can execute (pyenv's lives under /root, which is 0700)."""
    interpreter = Path(os.path.realpath(sys.executable))
    if not _reachable(interpreter):
        interpreter = Path("/usr/bin/python3")
    assert _reachable(interpreter), f"no Python the service's user can run ({interpreter})"
    subprocess.run(
        [str(interpreter), "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    ours = sysconfig.get_paths()["purelib"]
    version = subprocess.run(
        [
            str(venv / "bin/python"),
            "-c",
            "import sys, sysconfig; print(sysconfig.get_paths()['purelib'], sys.version_info[:2])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split(" ", 1)
    assert version[1].strip() == str(sys.version_info[:2]), "the same Python minor version"
    Path(version[0], "importd_checkout.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    script = venv / "bin/importd"
    script.write_text(
        f"#!{venv}/bin/python\nimport sys\nfrom importd.cli import main\nsys.exit(main())\n"
    )
    script.chmod(0o755)


def _localise(line: str, root: Path, dsn: str) -> str | None:
    """The recipe line with its absolute paths under ``root``; None for the lines a test
    cannot run (creating the venv, systemctl, journalctl, a system group)."""
    command = re.sub(r"\s{2,}#.*$", "", line).strip()
    command = re.sub(r"(^|&& )sudo ", r"\1", command)
    if command.startswith(
        ("python3 -m venv", "/opt/importd/venv/bin/pip", "systemctl", "journalctl", "groupadd")
    ):
        return None
    command = command.replace("'postgresql://importd:…@db/app'", shlex.quote(dsn))
    for path in ("/etc/", "/opt/importd", "/srv/uploads"):
        command = command.replace(path, f"{root}{path}")
    return command.replace("importd-uploads", STAND_IN_GROUP)


async def test_the_readme_recipe_works_as_written(conn: Any, dsn: str, prefix: Path) -> None:
    lines = recipe()
    assert any("groupadd --system --force importd-uploads" in line for line in lines)
    assert "SupplementaryGroups=importd-uploads" in (ROOT / "systemd" / "uploads.conf").read_text()
    _venv(prefix / "opt/importd/venv")  # what the venv and pip lines leave behind
    (prefix / "etc/systemd/system").mkdir(parents=True)  # what a Debian system has already
    (prefix / "srv").mkdir()
    env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8"}
    for line in lines:
        command = _localise(line, prefix, dsn)
        if command is None:
            continue
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    assert await conn.fetchval("SELECT count(*) FROM importd_migrations") >= 3

    etc = prefix / "etc/importd"
    assert stat.S_IMODE(etc.stat().st_mode) == 0o755
    assert stat.S_IMODE((etc / "dsn").stat().st_mode) == 0o600
    assert stat.S_IMODE((etc / "importd.toml").stat().st_mode) == 0o644
    uploads = prefix / "srv/uploads"
    assert stat.S_IMODE(uploads.stat().st_mode) == 0o2750
    group = grp.getgrnam(STAND_IN_GROUP).gr_gid
    assert uploads.stat().st_gid == group
    unit = (prefix / "etc/systemd/system/importd.service").read_text()
    assert (prefix / "etc/systemd/system/importd.service.d/uploads.conf").is_file()

    # The administrator's edit: the example's root is /srv/uploads, here under the prefix.
    toml = etc / "importd.toml"
    toml.write_text(toml.read_text().replace('"/srv/uploads"', f'"{uploads}"'))

    # systemd's credentials layout: a copy of each LoadCredential= file, owned by the
    # service's user, in a directory only it can read.
    creds = prefix / "run/credentials/importd.service"
    creds.mkdir(parents=True)
    for spec in re.findall(r"^LoadCredential=(\w+):(\S+)$", unit, re.M):
        name, source = spec
        shutil.copy(prefix / source.lstrip("/"), creds / name)
        os.chown(creds / name, DYNAMIC_UID, DYNAMIC_UID)
        os.chmod(creds / name, 0o400)
    os.chown(creds, DYNAMIC_UID, DYNAMIC_UID)
    os.chmod(creds, 0o500)

    await conn.execute("CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL)")
    upload = uploads / "first.csv"
    upload.write_text("id,name\n1,Ada\n2,Grace\n")
    os.chown(upload, 0, group)
    os.chmod(upload, 0o640)  # readable by the group only, as the uploader's umask 027 leaves
    job_id = await importd.enqueue(
        conn, "csv", {"source": f"file://{upload}", "table": "customers"}
    )

    (exec_start,) = re.findall(r"^ExecStart=(.+)$", unit, re.M)
    argv = [
        arg.replace("/opt/importd", f"{prefix}/opt/importd").replace("/etc/", f"{prefix}/etc/")
        for arg in shlex.split(exec_start)
    ]
    umask = re.search(r"^UMask=(\d+)$", unit, re.M)
    assert umask is not None
    service_env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/",
        "CREDENTIALS_DIRECTORY": str(creds),
        "INVOCATION_ID": "test",
    }
    log = prefix / "journal.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            argv,
            user=DYNAMIC_UID,
            group=DYNAMIC_UID,
            extra_groups=[group],
            umask=int(umask.group(1), 8),
            env=service_env,
            cwd="/",
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        async def completed() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"importd exited {proc.returncode}:\n{log.read_text()}")
            status = await conn.fetchval("SELECT status FROM import_jobs WHERE id = $1", job_id)
            assert status != "failed", await conn.fetchval(
                "SELECT last_error FROM import_jobs WHERE id = $1", job_id
            )
            return bool(status == "completed")

        await wait_until(completed, 30, what="the first import under the unit's user")
        assert await conn.fetchval("SELECT count(*) FROM customers") == 2
        events = [json.loads(line) for line in log.read_text().splitlines()]
        ready = next(e for e in events if e["event"] == "daemon_starting")
        assert ready["mode"] == "run"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: install systemd (apt-get install systemd)"
    unit = (ROOT / "systemd" / "importd.service").read_text()
    executable = str(Path(sys.executable).parent / "importd")  # the venv's console script
    local = tmp_path / "importd.service"
    local.write_text(unit.replace("/opt/importd/venv/bin/importd", executable))
    dropins = tmp_path / "importd.service.d"
    dropins.mkdir()
    shutil.copy(ROOT / "systemd" / "uploads.conf", dropins / "uploads.conf")
    done = subprocess.run(
        [analyze, "verify", str(local)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Documentation=file:///opt/importd/venv/share/doc/importd/README.md" in unit
