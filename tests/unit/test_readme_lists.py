"""The README's lists that a new user copies from: the make targets, the flags of each
command in the command-line table, and the name a daemon writes to ``locked_by``."""

from __future__ import annotations

import re

from importd import cli, config, daemon
from tests.helpers import ROOT

README = (ROOT / "README.md").read_text()


def test_make_help_lists_the_targets_the_readme_names() -> None:
    makefile = (ROOT / "Makefile").read_text()
    documented = set(re.findall(r"^([a-z][\w-]*):.*## ", makefile, re.MULTILINE))
    sentence = re.search(r"`make help` lists the other targets \(([^)]*)\)", README)
    assert sentence is not None
    named = set(re.findall(r"`([\w-]+)`", sentence.group(1)))
    assert named == documented - {"help", "test"}  # "the other": test is shown above it


def _command_rows() -> dict[str, str]:
    rows = {}
    for line in README.splitlines():
        found = re.match(r"\| `importd ([a-z]+)([^`]*)` \|", line)
        if found:
            rows[found.group(1)] = found.group(2)
    return rows


def test_the_command_table_names_flags_each_command_has() -> None:
    parsers = cli._commands(cli.build_parser())
    rows = _command_rows()
    assert set(rows) == set(parsers)
    for command, synopsis in rows.items():
        options = {o for a in parsers[command]._actions for o in a.option_strings}
        for flag in re.findall(r"--[a-z][a-z-]*", synopsis):
            assert flag in options, (command, flag)
        # What may be imported: every command that takes these flags names them all.
        for name in ("import_roots", "tables", "url_prefixes"):
            field = next(f for f in config.FIELDS if f.name == name)
            if field.takes_flag_in(command) and command != "config":
                assert field.option in synopsis, (command, field.option)


def test_locked_by_is_the_worker_name_and_a_random_suffix() -> None:
    settings = config.Settings(worker_name="w1")
    one, two = daemon.Daemon(settings).worker_id, daemon.Daemon(settings).worker_id
    assert re.fullmatch(r"w1:[0-9a-f]{6}", one) and re.fullmatch(r"w1:[0-9a-f]{6}", two)
    assert one != two  # two processes given one name (odds of a clash: 1 in 16 million)
    assert "each process adds `:` and 6 random hex digits (`w1:0082d8`)" in README


def _logged_events() -> set[str]:
    """Every event name importd's code logs: the first argument of a log call, a string
    literal (or each branch of a conditional expression of two literals), or a line
    written by hand (``"event": "..."``, the logging handler's own)."""
    call = re.compile(
        r"""\.(?:debug|info|warning|error|exception|critical)\(\s*
        (?:"([a-z_]+)"\s+if\s[^()]*?\selse\s+"([a-z_]+)"|"([a-z_]+)")
        |"event":\s*"([a-z_]+)""",
        re.VERBOSE,
    )
    events: set[str] = set()
    for path in (ROOT / "importd").rglob("*.py"):
        for found in call.finditer(path.read_text(encoding="utf-8")):
            events.update(name for name in found.groups() if name)
    return events


def test_the_logs_section_names_every_event_the_code_logs() -> None:
    section = README.split("### Logs", 1)[1].split("\n### ", 1)[0]
    listed = set(re.findall(r"`([a-z]+(?:_[a-z]+)+|progress)`", section.split("stable:", 1)[1]))
    logged = _logged_events()
    assert logged - listed == set(), "logged but not in the README's list"
    assert listed - logged == set(), "in the README's list but never logged"
