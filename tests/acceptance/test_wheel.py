"""The wheel carries its SQL: build it, install it in a fresh venv, migrate from there."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import ROOT, importd_env


@pytest.mark.timeout(600)
def test_wheel_installs_and_migrates(tmp_path: Path, empty_dsn: str) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("importd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "importd/sql/migrations/0001_import_jobs.sql" in names
    assert "importd/sql/queries/claim_jobs.sql" in names
    # A type checker trusts the package's annotations (PEP 561); the licence travels along.
    assert "importd/py.typed" in names
    dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert f"{dist_info}/licenses/LICENSE" in names, names
    metadata = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    assert "License-File: LICENSE" in metadata and "Classifier: Framework :: AsyncIO" in metadata
    # importd web's templates and assets ship in the package: nothing comes from a CDN.
    for asset in ("templates/base.html", "templates/job.html", "static/app.js", "static/app.css"):
        assert f"importd/web/{asset}" in names, asset
    data = next(n.split("/data/")[0] for n in names if "/data/" in n)
    for shared in (
        "share/doc/importd/README.md",
        "share/importd/importd.service",
        "share/importd/importd.toml",
        "share/importd/uploads.conf",
    ):
        assert f"{data}/data/{shared}" in names, names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = importd_env()
    env.pop("PYTHONPATH", None)  # only the installed wheel may be importable
    importd = str(venv / "bin" / "importd")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [importd, *args], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
        )

    located = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import importd.sql as s; print(s.root())"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    )
    assert str(venv) in located.stdout  # the SQL comes from the wheel, not this checkout
    # The unit's Documentation= names a file the venv has.
    unit = (venv / "share" / "importd" / "importd.service").read_text()
    doc = next(line for line in unit.splitlines() if line.startswith("Documentation="))
    assert doc == "Documentation=file:///opt/importd/venv/share/doc/importd/README.md"
    assert (venv / "share" / "doc" / "importd" / "README.md").is_file()
    assert run("migrate", "--check", "--dsn", empty_dsn).returncode == 1
    applied = run("migrate", "--dsn", empty_dsn)
    assert applied.returncode == 0, applied.stderr
    checked = run("migrate", "--check", "--dsn", empty_dsn)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The version is the distribution's, read at run time: one place, pyproject.toml.
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "importd", "--version"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    )
    assert version.stdout.strip() == f"importd {metadata_version(metadata)}", version.stdout


def metadata_version(metadata: str) -> str:
    return next(
        line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Version: ")
    )
