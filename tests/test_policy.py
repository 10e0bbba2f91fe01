"""Tests of faceunlock.policy: Class 3 lockout schedule, clocks, persistence, validation."""

from __future__ import annotations

import ast
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from faceunlock.errors import FaceUnlockError
from faceunlock.policy import (
    Policy,
    PolicyError,
    attempts_left,
    lockout_status,
    record_failure,
    record_success,
    reset_lockout,
)
from faceunlock.store import TemplateStore, UserRecord

REPO = Path(__file__).resolve().parent.parent
P = Policy()
T0 = 1_700_000_000.0


def fresh() -> UserRecord:
    t = np.eye(2, 8, dtype=np.float32)
    return UserRecord(templates=t, embedder="e", created=T0)


def fail_n(r, n: int, now: float, policy: Policy = P):
    for _ in range(n):
        r = record_failure(r, now, policy)
    return r


def test_defaults_are_class3() -> None:
    assert P.level == "strong" and P.threshold is None
    assert (P.lockout_after, P.lockout_s, P.lockout_backoff, P.permanent_after) == (5, 30.0, 2.0, 20)
    assert (P.min_face_px, P.max_yaw_deg, P.max_pitch_deg) == (80, 25, 20)
    assert (P.min_brightness, P.max_brightness, P.enroll_min_templates, P.enroll_max_templates) == (40, 220, 5, 15)
    assert (P.max_frames, P.timeout_s, P.require_challenge) == (10, 3.0, False)
    assert P.min_sharpness > 0
    assert [P.lockout_duration(f) for f in (1, 4, 5, 6, 9, 10, 15, 19)] == [0, 0, 30, 0, 0, 60, 120, 0]
    assert P.lockout_duration(20) == math.inf and P.lockout_duration(25) == math.inf
    with pytest.raises(Exception):
        P.level = "convenience"  # frozen


@pytest.mark.parametrize(
    "kw",
    [
        dict(level="weak"),
        dict(threshold=1.5),
        dict(threshold=float("nan")),
        dict(lockout_after=0),
        dict(lockout_s=0),
        dict(lockout_s=float("inf")),
        dict(lockout_backoff=0.5),
        dict(permanent_after=3),
        dict(min_face_px=0),
        dict(max_yaw_deg=-1),
        dict(max_pitch_deg=100),
        dict(min_sharpness=-1),
        dict(min_brightness=200, max_brightness=100),
        dict(max_brightness=300),
        dict(enroll_min_templates=10, enroll_max_templates=5),
        dict(enroll_min_templates=0),
        dict(max_frames=0),
        dict(timeout_s=0),
        dict(require_challenge="yes"),
        dict(max_frames=2.5),
    ],
)
def test_validation(kw) -> None:
    with pytest.raises(PolicyError) as ei:
        Policy(**kw)
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, FaceUnlockError)
    assert "Policy" in str(ei.value)


def test_valid_variants() -> None:
    Policy(level="convenience", threshold=0.5, permanent_after=None, require_challenge=True)


def test_five_failures_lock_30s() -> None:
    r = fail_n(fresh(), 4, T0)
    assert lockout_status(r, T0, P) == (False, None) and attempts_left(r, P) == 1
    r = record_failure(r, T0, P)
    assert r.failures == 5
    assert lockout_status(r, T0, P) == (True, T0 + 30)
    assert lockout_status(r, T0 + 29.9, P)[0]
    assert lockout_status(r, T0 + 30, P) == (False, None)


def test_schedule_doubles_then_permanent() -> None:
    r = fresh()
    now = T0
    expected = {5: 30, 10: 60, 15: 120}
    for f in range(1, 21):
        r = record_failure(r, now, P)
        locked, until = lockout_status(r, now, P)
        if f in expected:
            assert (locked, until) == (True, now + expected[f]), f
            now = until  # wait the lockout out
            assert lockout_status(r, now, P) == (False, None)
        elif f == 20:
            assert (locked, until) == (True, math.inf) and r.permanent_lock
        else:
            assert not locked, f
        now += 1
    # permanent: still locked a year later, no attempts left
    assert lockout_status(r, now + 365 * 86400, P) == (True, math.inf)
    assert attempts_left(r, P) == 0
    # a success cannot lift it; reset_lockout does
    assert lockout_status(record_success(r, now), now, P)[0]
    r = reset_lockout(r)
    assert lockout_status(r, now, P) == (False, None)
    assert r.failures == 0 and not r.permanent_lock and attempts_left(r, P) == 5


def test_success_resets_count() -> None:
    r = fail_n(fresh(), 4, T0)
    r = record_success(r, T0 + 1)
    assert r.failures == 0 and attempts_left(r, P) == 5
    r = fail_n(r, 4, T0 + 2)
    assert lockout_status(r, T0 + 2, P) == (False, None)  # 4, not 8
    r = fail_n(fresh(), 5, T0)
    r = record_success(r, T0 + 31)
    assert r.failures == 0 and r.locked_until == 0.0


def test_attempts_left() -> None:
    r = fresh()
    assert attempts_left(r, P) == 5
    assert attempts_left(fail_n(r, 3, T0), P) == 2
    assert attempts_left(fail_n(r, 5, T0), P) == 5  # after the lockout expires
    assert attempts_left(fail_n(r, 18, T0), P) == 2
    assert attempts_left(fail_n(r, 7, T0), Policy(permanent_after=8)) == 1


def test_clock_set_backwards_does_not_shorten_lockout() -> None:
    r = fail_n(fresh(), 5, T0)
    assert lockout_status(r, T0, P) == (True, T0 + 30)
    for back in (1, 60, 86400, T0):  # clock set back by a second … to 1970
        locked, until = lockout_status(r, T0 - back, P)
        assert locked and until == T0 + 30
    # failures recorded with the clock set back still escalate, measured from the latest attempt
    r2 = fail_n(r, 5, T0 - 86400)  # 10 failures, clock one day behind
    locked, until = lockout_status(r2, T0 - 86400, P)
    assert locked and until >= T0 + 60
    # the lockout still has at least its full length left at the time it started
    assert until - max(T0 - 86400, r2.last_attempt) >= 60
    # a normal clock later: it ends exactly when it should
    assert lockout_status(r2, until, P) == (False, None)
    # last_attempt never moves backwards on failure
    assert r2.last_attempt == T0


def test_success_reanchors_clock_and_reset_clears_it() -> None:
    r = record_failure(fresh(), T0 + 10**6, P)  # a clock once set far forward
    r = record_success(r, T0)
    assert r.last_attempt == T0
    r = fail_n(r, 5, T0)
    assert lockout_status(r, T0 + 30, P) == (False, None)
    r = reset_lockout(record_failure(fresh(), T0 + 10**6, P))
    assert r.last_attempt == 0.0


def test_pure_functions_do_not_mutate_and_accept_duck_types() -> None:
    r = fresh()
    r2 = record_failure(r, T0, P)
    assert r.failures == 0 and r2.failures == 1 and r2.templates is r.templates
    ns = SimpleNamespace(failures=4, locked_until=0.0, permanent_lock=False, last_attempt=0.0)
    ns2 = record_failure(ns, T0, P)
    assert ns.failures == 4 and ns2.failures == 5 and lockout_status(ns2, T0, P) == (True, T0 + 30)
    with pytest.raises(ValueError):
        record_failure(r, float("nan"), P)


def test_policy_imports_nothing_above_it() -> None:
    tree = ast.parse((REPO / "faceunlock" / "policy.py").read_text())
    local = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            local.add(node.module)
        if isinstance(node, ast.Import):
            assert not any(a.name.startswith("faceunlock") for a in node.names)
    assert local <= {"errors", "store"}


_CHILD = textwrap.dedent(
    """
    import json, sys
    from faceunlock.store import TemplateStore
    from faceunlock.policy import Policy, lockout_status, attempts_left
    r = TemplateStore(sys.argv[1], key=bytes.fromhex(sys.argv[2])).get("alice")
    locked, until = lockout_status(r, float(sys.argv[3]), Policy())
    print(json.dumps({"locked": locked, "until": until if until is None or until != float("inf") else "inf",
                      "failures": r.failures, "left": attempts_left(r, Policy())}))
    """
)


def _ask_new_process(path: Path, key: bytes, now: float) -> dict:
    import json

    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), key.hex(), repr(now)],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )
    return json.loads(out.stdout)


def test_lockout_persists_across_processes(tmp_path: Path) -> None:
    key = os.urandom(32)
    p = tmp_path / "a.fus"
    s = TemplateStore(p, key=key)
    s.put("alice", fresh())
    for i in range(5):
        s.update("alice", lambda r: record_failure(r, T0 + i, P))
    got = _ask_new_process(p, key, T0 + 10)
    assert got == {"locked": True, "until": T0 + 4 + 30, "failures": 5, "left": 5}
    # clock set back in the new process: still locked
    assert _ask_new_process(p, key, T0 - 3600)["locked"] is True
    for i in range(15):
        s.update("alice", lambda r: record_failure(r, T0 + 1000 + i, P))
    got = _ask_new_process(p, key, T0 + 10**7)
    assert got["locked"] is True and got["until"] == "inf" and got["failures"] == 20
    s.update("alice", reset_lockout)
    got = _ask_new_process(p, key, T0 + 10**7)
    assert got == {"locked": False, "until": None, "failures": 0, "left": 5}


def test_longest_finite_lockout_step() -> None:
    assert P.longest_lockout_s == 120.0  # 30, 60, 120 s, then permanent at 20
    assert Policy(permanent_after=21).longest_lockout_s == 240.0
    assert Policy(permanent_after=5).longest_lockout_s == 0.0  # the first step is permanent
    assert Policy(permanent_after=None).longest_lockout_s == math.inf


@pytest.mark.parametrize("ahead", [3600.0, 365 * 86400.0])
def test_one_failure_under_a_clock_ahead_cannot_lock_longer_than_the_longest_step(ahead) -> None:
    # issue 9 finding 6: one failure recorded with the clock a year ahead, then four at the
    # right time, gave a 365-day lock
    r = record_failure(fresh(), T0 + ahead, P)
    r = fail_n(r, 4, T0)
    locked, until = lockout_status(r, T0, P)
    assert locked and until <= T0 + P.longest_lockout_s
    assert lockout_status(r, T0 + P.longest_lockout_s, P) == (False, None)
    assert r.last_attempt <= T0 + P.longest_lockout_s  # the year-ahead time is not kept
    # the schedule goes on normally from there
    r = fail_n(r, 5, T0 + 1000)
    assert lockout_status(r, T0 + 1000, P) == (True, T0 + 1000 + 60)


def test_clock_ahead_with_an_unbounded_schedule_is_capped_by_the_step() -> None:
    p = Policy(permanent_after=None)
    r = fail_n(record_failure(fresh(), T0 + 365 * 86400, p), 4, T0, p)
    locked, until = lockout_status(r, T0, p)
    assert locked and until <= T0 + 30

