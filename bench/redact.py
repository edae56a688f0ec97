"""Redaction benchmark: ``importd.redaction.redact`` over 1 MiB of several kinds of text, against
``json.dumps`` of the same text (what storing it costs anyway) measured in the same run,
and the ratio of 2 MiB to 1 MiB (about 2 when linear; quadratic code would show 4).
Besides the wall time, the CPU time of the redacting thread: on a loaded machine the
wall time counts the other processes' turns too.

    python -m bench.redact [--repeat 15]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import string
import time
from collections.abc import Callable

from importd import redaction

from .common import machine, table

MIB = 1 << 20
TOKEN = "tok:Tail-" + "Zq7@x" * 5
PASSWORD = "Pa@ss:w0rd-42"


def _fill(piece: str, size: int) -> str:
    return (piece * (size // len(piece) + 1))[:size]


def texts(size: int) -> dict[str, str]:
    """The texts, ``size`` characters each."""
    rng = random.Random(size)
    log = "".join(
        json.dumps(
            {
                "event": "job_failed",
                "job_id": i,
                "error": rng.choice(
                    [
                        f"HTTP 401 from the endpoint: Bearer {TOKEN} rejected",
                        f"cannot connect to postgresql://app:{PASSWORD}@db.example/app",
                        "HeaderMismatch: header field 'nme' is not a column of public.people",
                        "RuntimeError: the upstream answered 502 Bad Gateway",
                    ]
                ),
            }
        )
        + "\n"
        for i in range(size // 60)
    )
    answer = json.dumps(
        {f"key{i}": rng.choice(["value", TOKEN, "x" * 40]) for i in range(size // 40)}
        | {f"{TOKEN}{i}": i for i in range(size // 400)}
    )
    return {
        "log lines, secrets in 1 of 2": _fill(log, size),
        "JSON answer, token as keys and values": _fill(answer, size),
        "random printable": "".join(rng.choices(string.printable, k=size)),
        "letters (the issue's quadratic case)": _fill("aB3+.-", size),
        "dense 'password=' pairs": _fill("password=x ", size),
        "dense 'Bearer x' tokens": _fill("Bearer x ", size),
        # The same with a word between them: no run to mask whole.
        "dense 'password=x y', not adjacent": _fill("password=x y ", size),
        "dense 'Bearer x, y', not adjacent": _fill("Bearer x, y ", size),
        "dense '://u:' URL heads": _fill("a://u:", size),
        "dense '://u:' URL heads, one '@' at the end": _fill("a://u:", size - 1) + "@",
        "nothing but '='": "=" * size,
        "'password' then nothing but '='": _fill("password", 8) + "=" * (size - 8),
        "dense registered secrets": _fill(TOKEN + " " + PASSWORD + " ", size),
        # Dense shapes an audit of issue 12 found slow (35 - 54 ms), and close variants.
        "dense 'x@y://a:b' URL passwords": _fill("x@y://a:b", size),
        "dense 'x@://u:' URL passwords": _fill("x@://u:", size),
        "dense 'https://u:p@h/ ' URLs": _fill("https://u:p@h/ ", size),
        "dense 'password =' keys, a blank before '='": _fill("password =", size),
        "dense 'PASSWORD =' keys": _fill("PASSWORD =", size),
        'dense "pwd=  \'x" quoted values, unclosed': _fill("pwd=  'x", size),
        'dense "pwd=\\t\'x" quoted values, a tab': _fill("pwd=\t'x", size),
        "dense \"password ='x' \" quoted values": _fill("password ='x' ", size),
        "dense 'Bearer x password =y' mixes": _fill("Bearer x password =y", size),
        "dense 'Bearer x pwd =y' mixes": _fill("Bearer x pwd =y", size),
        "dense 'BEARER x, ' tokens": _fill("BEARER x, ", size),
        "dense 'BeArEr x, ' tokens, a rare spelling": _fill("BeArEr x, ", size),
        "dense 'token=x&y ' pairs": _fill("token=x&y ", size),
        # Non-ASCII text (lower-cased by bytes: a table look-up per character cost 50 -
        # 75 ms a MiB), and "=" dense with words that begin keys but no key.
        "Japanese prose": _fill("\u65e5\u672c\u8a9e\u306e\u6587\u7ae0\u3067\u3059\u3002\n", size),
        "Latin-1 prose with a 'b'": _fill("caf\u00e9 cr\u00e8me br\u00fbl\u00e9e ", size),
        "'papapa…=' (every 'pa' a key begun, no key)": _fill("pa" * 20 + "=", size),
        "blanks, then one 'BeArEr x' (a rare spelling)": " " * (size - 8) + "BeArEr x",
        "one 'BeArEr x', then blanks": "BeArEr x" + " " * (size - 8),
        # Shapes found slow after runs (outside runs: a word, or a failed key, between).
        "dense 'Bearer h =' (a key tried and failed)": _fill("Bearer h =", size),
        "dense '&hpwd=x@' pairs": _fill("&hpwd=x@", size),
        "dense 'Bearer x and ' tokens, a word between": _fill("Bearer x and ", size),
        # Sensitive keys before ":" (JSON, Python repr, YAML, headers): every ":" after a
        # key's last letter tries the key, a value runs to its closing quote or the end of
        # the line, and keys may follow one another with nothing else between them.
        "dense '\"password\":' keys, no value": _fill('"password":', size),
        'dense \'"password": "x", \' JSON pairs': _fill('"password": "x", ', size),
        'dense \'{"access_token":"abc123"},\' objects': _fill('{"access_token":"abc123"},', size),
        "dense \"'api_key': 'x', \" repr pairs": _fill("'api_key': 'x', ", size),
        "dense '\"pin\": 1234, ' numbers": _fill('"pin": 1234, ', size),
        "dense 'password: ' prefixes": _fill("password: ", size),
        "dense 'token:' prefixes, no blank": _fill("token:", size),
        "dense 'api_key: x\\n' YAML lines": _fill("api_key: x\n", size),
        "dense 'Authorization: Basic x\\r\\n' headers": _fill("Authorization: Basic x\r\n", size),
        "dense 'dbPassword: x\\n' camelCase YAML lines": _fill("dbPassword: x\n", size),
        "dense 'HttpToken: x\\n' class names (kept)": _fill("HttpToken: x\n", size),
        "dense 'HttpToken: x apiToken: y\\n' both": _fill("HttpToken: x apiToken: y\n", size),
        # An audit's text: each class name's value was read to the end of its line.
        "256 'HttpToken: m ' then 1 MiB on one line": "HttpToken: m " * 256
        + _fill("x\\y", size - 13 * 256),
        "dense '\"id\":1,' JSON keys that end like one (no key)": _fill('"id":1,', size),
        "dense '\"tokens\":1,' JSON keys that hold one (no key)": _fill('"tokens":1,', size),
        "dense 'a: b ' colons in prose": _fill("a: b ", size),
        '\'"password": "\' then one long value': _fill('"password": "', 13)
        + _fill('a\\"b', size - 15)
        + '"}',
        "'password:' then nothing but ':'": "password" + ":" * (size - 8),
        # Every key letter once, then "e" (a letter of five key words) with a ":" every 63
        # characters: an audit's text that made the search for keys as substrings slow.
        "every key letter, then 'e' runs and ':'": "zuhrnioatkypedscgw_-"
        + _fill("e" * 62 + ":", size - 20),
        # The slowest shapes padded with a word to just under the dense spacing
        # (redaction.DENSE_SPACING): the densest text masked credential by credential.
        **{
            f"{piece!r} + a word, just under the dense spacing": _fill(_spaced(piece), size)
            for piece in SLOWEST
        },
    }


# The shapes that cost the most per credential, for the "just under the spacing" texts.
SLOWEST = (
    "Bearer h =",
    "Bearer x pwd =y",
    "x@y://a:b",
    "pwd=\t'x",
    "https://u:p@h/ ",
    "&hpwd=x@",
    '"pin": 1234, ',
    '"password": "x", ',
    "api_key: x\n",
    '"id":1,"pwd":',
    "dbPassword: x\n",
    "HttpToken: x\n",
)


def _spaced(piece: str) -> str:
    """``piece`` and a word, as long as the places a credential could start in it (what
    ``redaction.DENSE_SPACING`` counts) allow without the text being dense."""
    places = piece.count("://") + piece.lower().count("bearer") + piece.count("=")
    if redaction._has_key(piece.lower()):  # (a ":" counts only where a key is)
        places += piece.count(":")
    width = places * redaction.DENSE_SPACING + 1
    return piece + " " + "w" * max(1, width - len(piece) - 2) + " "


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Seconds one call of ``fn`` takes: wall time, and CPU time of this thread."""
    start, cpu = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - start, time.thread_time() - cpu


def measure(text: str, doubled: str, repeat: int) -> tuple[float, float, float, float]:
    """The fastest of ``repeat`` redactions of ``text`` (the machine's quiet moments),
    in wall and CPU time, and the medians of two ratios measured side by side in each
    round (robust to a loaded machine): against json.dumps of the same text, and 2 MiB
    against 1 MiB."""
    times, cpu_times, to_json, growth = [], [], [], []
    for _ in range(repeat):
        reference, _ = timed(lambda: json.dumps(text))
        spent, cpu = timed(lambda: redaction.redact(text))
        twice, _ = timed(lambda: redaction.redact(doubled))
        times.append(spent)
        cpu_times.append(cpu)
        to_json.append(spent / reference)
        growth.append(twice / spent)
    return min(times), min(cpu_times), statistics.median(to_json), statistics.median(growth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    for secret in (TOKEN, PASSWORD, "another-secret-1", "and:another@2", "a-third-one-3"):
        redaction.register_secret(secret)
    one, two = texts(MIB), texts(2 * MIB)
    rows = []
    for name, text in one.items():
        redacted = redaction.redact(text)
        assert TOKEN not in redacted and PASSWORD not in redacted
        spent, cpu, to_json, growth = measure(text, two[name], args.repeat)
        rows.append(
            (
                name,
                f"{spent * 1000:6.2f} ms (CPU {cpu * 1000:5.2f} ms)   "
                f"{to_json:5.2f} x json.dumps   2 MiB / 1 MiB {growth:4.2f}",
            )
        )
    print(machine(), "load average:", " ".join(f"{x:.1f}" for x in os.getloadavg()))
    print(table(f"redact() of 1 MiB (fastest of {args.repeat}; ratios: medians)", rows))


if __name__ == "__main__":
    main()
