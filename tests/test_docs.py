"""The examples in docs/CLI.md and docs/PAM.md agree with the code.

Every fenced block is checked: JSON examples against the real ``--json`` output of the
command they document (same keys at every level, same JSON types where both sides are
not null), the pam.conf example through pam-auth's own parser, command lines and PAM
lines through the CLI's argument parser, and the list of reasons against the enum."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from pathlib import Path

import pytest

from conftest import write_views
from faceunlock import cli, pam
from faceunlock.unlock import Reason

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DATA = ROOT / "faceunlock" / "data"


def blocks(name: str) -> list[tuple[str, str, str]]:
    """(language, body, the text before the block) for every fenced block of docs/NAME."""
    text = (DOCS / name).read_text()
    out = []
    for m in re.finditer(r"^```([\w-]*)\n(.*?)^```", text, re.M | re.S):
        out.append((m.group(1), m.group(2), text[max(0, m.start() - 600):m.start()]))
    return out


@pytest.fixture(scope="module")
def real_json(tmp_path_factory) -> dict[str, object]:
    """The real --json output of enroll, unlock (liveness on) and users."""
    d = tmp_path_factory.mktemp("docs")
    frames = write_views(DATA / "astronaut.jpg", d / "astro", 6)
    store = ["--store", str(d / "s" / "s.fus"), "--key-file", str(d / "k" / "s.key")]
    out = {}
    for cmd, args in (("enroll", ["enroll", "alice", "--source", str(frames), "--quiet"]),
                      ("unlock", ["unlock", "alice", "--source", str(frames)]),
                      ("users", ["users"])):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = cli.main(store + ["--json"] + args)
        assert code in (0, 1), (cmd, code)
        out[cmd] = json.loads(buf.getvalue())
    return out


def _kind(v) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return type(v).__name__


def same_shape(doc, real, where: str = "$") -> None:
    if doc is None or real is None:
        return  # nullable: the docs say when
    assert _kind(doc) == _kind(real), f"{where}: docs {_kind(doc)} vs code {_kind(real)}"
    if isinstance(doc, dict):
        assert set(doc) == set(real), f"{where}: docs keys {sorted(doc)} vs code keys {sorted(real)}"
        for k in doc:
            same_shape(doc[k], real[k], f"{where}.{k}")
    elif isinstance(doc, list) and doc and real:
        same_shape(doc[0], real[0], f"{where}[0]")


def test_every_json_example_in_cli_md_matches_the_real_output(real_json):
    found = []
    for lang, body, before in blocks("CLI.md"):
        if lang != "json":
            continue
        m = re.findall(r"`--json` output of `(\w[\w-]*)`", before)
        assert m, f"a JSON block in docs/CLI.md does not say which command it shows: {body[:60]!r}"
        cmd = m[-1]
        assert cmd in real_json, f"docs/CLI.md shows --json output of {cmd!r}: add it to this test"
        same_shape(json.loads(body), real_json[cmd], cmd)
        found.append(cmd)
    assert "unlock" in found  # the example issue 9 found out of date


def test_the_reasons_listed_are_the_enum():
    text = (DOCS / "CLI.md").read_text()
    line = re.search(r"^Reasons: (.*)$", text, re.M).group(1)
    assert set(re.findall(r"`(\w+)`", line)) == {r.value for r in Reason}


def test_every_command_line_in_cli_md_parses():
    ap = cli.build_parser()
    n = 0
    for lang, body, _ in blocks("CLI.md"):
        if lang:
            continue
        for line in body.splitlines():
            if not line.startswith("faceunlock ") or "COMMAND" in line:
                continue
            argv = shlex.split(line.split("&&")[0])[1:]
            ap.parse_args(argv)  # SystemExit(2) on an unknown flag or command
            n += 1
    assert n >= 3


def test_pam_md_config_examples_load_with_liveness_on(tmp_path):
    inis = [body for lang, body, _ in blocks("PAM.md") if lang == "ini"]
    assert inis
    for body in inis:
        conf = tmp_path / "pam.conf"
        conf.write_text(body)
        got = pam.read_config(conf)
        assert got.get("liveness", True) is True


def test_pam_md_pam_lines_parse():
    ap = cli.build_parser()
    n = 0
    for lang, body, _ in blocks("PAM.md"):
        for line in body.splitlines():
            if "pam_exec.so" in line and "pam-auth" in line:
                argv = shlex.split(line.split(" faceunlock ", 1)[1] if " faceunlock " in line
                                   else line.split("/faceunlock ", 1)[1])
                args = ap.parse_args(argv)
                assert args.command == "pam-auth"
                n += 1
    assert n >= 2  # the install line and the test service line
