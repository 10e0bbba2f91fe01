"""Review 3 (cli arguments): no argument that skips the decision may exit 0.

``unlock`` and ``pam-auth`` answer by exit code (0 = granted / PAM success). argparse's
``-h``/``--help`` and the global ``--version`` print and exit 0 without judging a face:
a user name typed into a wrapper (``faceunlock unlock "$NAME" && open_door`` with
NAME=--help) or a stray flag on a PAM line then "granted" without anyone in front of the
camera. Each case must be exit 2 (an error: nothing was judged)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from faceunlock import cli


@pytest.mark.parametrize("argv", [
    ["--version", "unlock", "alice"],
    ["--version", "pam-auth"],
    ["unlock", "--help"],
    ["unlock", "-h"],
    ["unlock", "alice", "-h"],
    ["pam-auth", "--help"],
    ["--store", "/nonexistent/s.fus", "unlock", "--help"],
])
def test_help_or_version_with_a_deciding_command_is_not_exit_0(argv, tmp_path, capsys):
    assert cli.main(argv) == 2


def test_help_and_version_alone_still_exit_0(capsys):
    assert cli.main(["--version"]) == 0
    with pytest.raises(SystemExit) as e:  # plain help: argparse's usual exit 0
        cli.main(["--help"])
    assert e.value.code == 0
    with pytest.raises(SystemExit) as e:
        cli.main(["users", "--help"])
    assert e.value.code == 0


def test_console_entry_point_with_help_as_user_name(tmp_path):
    """What a shell wrapper sees: `python -m faceunlock unlock --help` exits 2."""
    r = subprocess.run([sys.executable, "-m", "faceunlock", "unlock", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
