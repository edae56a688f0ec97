"""One source for each setting, through the command: every setting's flag and environment
variable reach ``importd config``, which lists every setting."""

from __future__ import annotations

import json
from pathlib import Path

from importd import config
from tests.helpers import run_importd_batch
from tests.unit.test_settings import sample

FIELDS = config.FIELDS


def test_every_flag_and_environment_variable_shows_in_importd_config(tmp_path: Path) -> None:
    calls: list[tuple[list[str], dict[str, str]]] = []
    for f in FIELDS:
        text, _ = sample(f, tmp_path)
        flag = [f.option] if f.kind == "bool" else [f.option, text]
        calls.append((["config", "--json", *flag], {}))
        calls.append((["config", "--json"], {f.env: text}))
    calls.append((["config", "--json"], {}))
    *done, bare = run_importd_batch(calls)
    assert bare.returncode == 0, bare.stderr
    defaults = json.loads(bare.stdout)
    assert list(defaults) == [f.name for f in FIELDS]  # importd config lists every one
    for i, f in enumerate(FIELDS):
        _, shown = sample(f, tmp_path)
        for way, result in (("flag", done[2 * i]), ("environment", done[2 * i + 1])):
            assert result.returncode == 0, (f.name, way, result.stderr)
            values = json.loads(result.stdout)
            assert values[f.name] == shown, (f.name, way)
            assert values[f.name] != defaults[f.name], (f.name, way)
            others = {k: v for k, v in values.items() if k != f.name}
            assert others == {k: v for k, v in defaults.items() if k != f.name}, (f.name, way)
