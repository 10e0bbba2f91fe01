"""Unlock policy: match level, enrolment quality gates, and the lockout schedule.

Defaults follow the Android CDD biometric Class 3 ("strong") rules: 5 consecutive failed
matches lock the user out for 30 s, each further 5 failures double the lockout (10 → 60 s,
15 → 120 s), and 20 failures lock the user out until :func:`reset_lockout` (which the
application calls after a stronger authentication such as a PIN or password). A successful
match resets the failure count.

The lockout functions are pure: they take a ``UserRecord``-like object and an explicit
``now`` (unix seconds) and return a new record; the caller persists it, typically with
``store.update(user, lambda r: record_failure(r, now, policy))``.

Clocks. ``locked_until`` is absolute wall-clock time (unix seconds) so that a lockout
survives process restarts and reboots, which a monotonic clock alone cannot do.

* Judging (:func:`lockout_status`) compares ``locked_until`` with the raw ``now``: a clock
  set *backwards* only makes a lockout last longer in wall time, never shorter.
* A new lockout step starts at a reference time ``t`` (:func:`record_failure`). While a
  lockout is in force on the current clock, ``t = max(now, last_attempt)``: failures
  recorded with the clock set back still escalate from the latest attempt. Otherwise the
  recorded ``last_attempt`` is first clamped to ``now + cap`` and the new lockout ends no
  later than ``now + cap``, where ``cap`` is the schedule's longest finite step
  (:attr:`Policy.longest_lockout_s`, 120 s by default; with ``permanent_after=None`` the
  step being started). So one failure recorded under a clock a year ahead, then four at
  the right time, lock for at most ``cap`` — not a year.
* A clock set *forwards* does end a lockout early; that is a known limit of wall-clock
  lockouts, to be closed by the application feeding a trusted/monotonic time source (e.g.
  Android's ``elapsedRealtime`` plus a boot counter) or hardware-backed rate limiting.
* Residual: a lockout step that *started* while the clock was ahead ends at that clock's
  time plus the step (it cannot be told apart from the clock having been set back since,
  which must not shorten a lockout); :func:`reset_lockout` clears it. A successful match
  re-anchors ``last_attempt`` to ``now`` and :func:`reset_lockout` clears it.

This module imports nothing from the store, the engine, the camera or the CLI.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from .errors import FaceUnlockError

__all__ = [
    "Policy",
    "PolicyError",
    "LockoutState",
    "lockout_status",
    "record_failure",
    "record_success",
    "reset_lockout",
    "attempts_left",
]

LEVELS = ("strong", "convenience")


class PolicyError(FaceUnlockError, ValueError):
    """A :class:`Policy` field has an invalid value."""


@runtime_checkable
class LockoutState(Protocol):
    """What the lockout functions need of a record (``faceunlock.store.UserRecord`` fits)."""

    failures: int
    locked_until: float
    permanent_lock: bool
    last_attempt: float


R = TypeVar("R", bound=LockoutState)


@dataclass(frozen=True)
class Policy:
    """Immutable unlock policy; every field is validated at construction.

    Matching:
        level: ``"strong"`` (Class 3 threshold) or ``"convenience"`` (looser threshold).
        threshold: explicit cosine-similarity threshold in [-1, 1], overriding ``level``;
            ``None`` = the embedder's calibrated threshold for ``level``.

    Lockout (consecutive failed matches):
        lockout_after: failures per lockout step (5).
        lockout_s: first lockout duration, seconds (30).
        lockout_backoff: factor applied per further step (2 → 30, 60, 120 s).
        permanent_after: failures that lock until :func:`reset_lockout` (20); ``None`` = never.

    Enrolment quality gates:
        min_face_px: minimum face box side, pixels (80).
        max_yaw_deg / max_pitch_deg: maximum head yaw / pitch, degrees (25 / 20).
        min_sharpness: minimum variance of the Laplacian of the grey 150-px face chip (15).
            Measured: real webcam-like video frames 26–154, LFW photos 12–128, the same
            photos blurred with a 2-px Gaussian 3–9.
        min_brightness / max_brightness: allowed mean grey level of the face chip, 0..255 (40..220).
        enroll_min_templates / enroll_max_templates: templates kept per user (5..15).

    Unlock attempt:
        max_frames: frames examined per unlock attempt (10).
        timeout_s: seconds per unlock attempt (3.0).
        require_challenge: require a liveness challenge (e.g. blink/turn) before accepting.
        require_attention: with liveness on, a grant needs open eyes (True): the median eye
            aspect ratio of the attempt's face frames must reach max(0.15, 0.63 × the matched
            user's open-eye EAR from enrolment, ``UserRecord.meta["eye_open_ear"]``)
            (``faceunlock.liveness.passive.attention_bar``; ATTENTION_MIN_EAR,
            ATTENTION_RATIO), or 0.15 alone for a record enrolled before faceunlock stored
            that baseline (re-enrol to get the relative rule). So a sleeping owner's face does
            not unlock. ``faceunlock eval-attention --cache DIR`` (docs/LIVENESS.md,
            "Attention"): on the reporting half of the dev videos 0/25 open-eye 3-s windows
            rejected (as the absolute rule) and 15/40 blink-trough frames caught (absolute:
            9/40). ``False`` turns the check off.

    Templates:
        adapt_templates: after a confident, live grant, the granting frame's template may
            replace the user's least useful stored one (``faceunlock.decision.adapt_gallery``;
            enrolment's first ``enroll_min_templates`` stay, at most ``enroll_max_templates``).
            ``False`` keeps the enrolled templates as they are.
    """

    level: str = "strong"
    threshold: float | None = None
    lockout_after: int = 5
    lockout_s: float = 30.0
    lockout_backoff: float = 2.0
    permanent_after: int | None = 20
    min_face_px: int = 80
    max_yaw_deg: float = 25.0
    max_pitch_deg: float = 20.0
    min_sharpness: float = 15.0
    min_brightness: float = 40.0
    max_brightness: float = 220.0
    enroll_min_templates: int = 5
    enroll_max_templates: int = 15
    max_frames: int = 10
    timeout_s: float = 3.0
    require_challenge: bool = False
    require_attention: bool = True
    adapt_templates: bool = True

    def __post_init__(self) -> None:
        def bad(msg: str) -> PolicyError:
            return PolicyError(f"invalid Policy: {msg}")

        def is_int(v: object) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: object) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        if self.level not in LEVELS:
            raise bad(f"level must be one of {LEVELS}, got {self.level!r}")
        if self.threshold is not None and not (is_num(self.threshold) and -1.0 <= self.threshold <= 1.0):
            raise bad(f"threshold must be None or a number in [-1, 1], got {self.threshold!r}")
        if not (is_int(self.lockout_after) and self.lockout_after >= 1):
            raise bad(f"lockout_after must be an int >= 1, got {self.lockout_after!r}")
        if not (is_num(self.lockout_s) and self.lockout_s > 0):
            raise bad(f"lockout_s must be a finite number > 0 seconds, got {self.lockout_s!r}")
        if not (is_num(self.lockout_backoff) and self.lockout_backoff >= 1):
            raise bad(f"lockout_backoff must be a finite number >= 1, got {self.lockout_backoff!r}")
        if self.permanent_after is not None and not (
            is_int(self.permanent_after) and self.permanent_after >= self.lockout_after
        ):
            raise bad(f"permanent_after must be None or an int >= lockout_after, got {self.permanent_after!r}")
        if not (is_int(self.min_face_px) and self.min_face_px >= 1):
            raise bad(f"min_face_px must be an int >= 1 pixels, got {self.min_face_px!r}")
        for name in ("max_yaw_deg", "max_pitch_deg"):
            v = getattr(self, name)
            if not (is_num(v) and 0 < v <= 90):
                raise bad(f"{name} must be in (0, 90] degrees, got {v!r}")
        if not (is_num(self.min_sharpness) and self.min_sharpness >= 0):
            raise bad(f"min_sharpness must be a finite number >= 0, got {self.min_sharpness!r}")
        if not (
            is_num(self.min_brightness) and is_num(self.max_brightness)
            and 0 <= self.min_brightness < self.max_brightness <= 255
        ):
            raise bad(
                "brightness range must satisfy 0 <= min_brightness < max_brightness <= 255, "
                f"got {self.min_brightness!r}..{self.max_brightness!r}"
            )
        if not (
            is_int(self.enroll_min_templates) and is_int(self.enroll_max_templates)
            and 1 <= self.enroll_min_templates <= self.enroll_max_templates
        ):
            raise bad(
                "need ints 1 <= enroll_min_templates <= enroll_max_templates, got "
                f"{self.enroll_min_templates!r}, {self.enroll_max_templates!r}"
            )
        if not (is_int(self.max_frames) and self.max_frames >= 1):
            raise bad(f"max_frames must be an int >= 1, got {self.max_frames!r}")
        if not (is_num(self.timeout_s) and self.timeout_s > 0):
            raise bad(f"timeout_s must be a finite number > 0 seconds, got {self.timeout_s!r}")
        if not isinstance(self.require_challenge, bool):
            raise bad(f"require_challenge must be a bool, got {self.require_challenge!r}")
        if not isinstance(self.adapt_templates, bool):
            raise bad(f"adapt_templates must be a bool, got {self.adapt_templates!r}")
        if not isinstance(self.require_attention, bool):  # None or "no" must not mean "off"
            raise bad(f"require_attention must be a bool, got {self.require_attention!r}")

    def lockout_duration(self, failures: int) -> float:
        """Lockout in seconds that starts when the ``failures``-th consecutive failure happens.

        0.0 = no lockout at this count; ``math.inf`` = permanent (until :func:`reset_lockout`).
        """
        if self.permanent_after is not None and failures >= self.permanent_after:
            return math.inf
        if failures < self.lockout_after or failures % self.lockout_after:
            return 0.0
        step = failures // self.lockout_after - 1
        return float(self.lockout_s * self.lockout_backoff**step)

    @property
    def longest_lockout_s(self) -> float:
        """The schedule's longest finite lockout step, seconds (120 s by default).

        ``math.inf`` when ``permanent_after`` is ``None`` (the steps grow without bound);
        0.0 when the first lockout step is already permanent.
        """
        if self.permanent_after is None:
            return math.inf
        last = (self.permanent_after - 1) // self.lockout_after * self.lockout_after
        return self.lockout_duration(last) if last >= self.lockout_after else 0.0


def _check_now(now: float) -> float:
    if not math.isfinite(now):
        raise ValueError("now must be finite unix seconds")
    return float(now)


def _cap_s(policy: Policy, failures: int) -> float:
    """How far past ``now`` a lockout reference time may lie (see the module docstring):
    the longest finite step, or with ``permanent_after=None`` the step reached at ``failures``."""
    if policy.permanent_after is not None:
        return max(policy.lockout_s, policy.longest_lockout_s)
    reached = failures // policy.lockout_after * policy.lockout_after
    return max(policy.lockout_s, policy.lockout_duration(reached))


def _replace(record: R, **changes: Any) -> R:
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return dataclasses.replace(record, **changes)  # type: ignore[return-value]
    new = copy.copy(record)
    for k, v in changes.items():
        setattr(new, k, v)
    return new


def lockout_status(record: LockoutState, now: float, policy: Policy) -> tuple[bool, float | None]:
    """``(locked, until)``: until is unix seconds, ``math.inf`` if permanent, ``None`` if not locked.

    Compares ``locked_until`` with the raw ``now`` (unix seconds): a clock set back can only
    lengthen a lockout. ``policy`` is accepted for symmetry and future rules.
    """
    if record.permanent_lock:
        return True, math.inf
    t = _check_now(now)
    until = float(record.locked_until or 0.0)
    if until > t:
        return True, until
    return False, None


def record_failure(record: R, now: float, policy: Policy) -> R:
    """A new record after one failed match at ``now`` (unix seconds).

    Increments ``failures``; at each ``lockout_after``-th failure sets ``locked_until`` to
    the step's end (never earlier than an existing lockout), and at ``permanent_after``
    sets ``permanent_lock``. The step starts at ``max(now, last_attempt)`` while a lockout
    is in force, else at ``max(now, min(last_attempt, now + cap))`` and ends by
    ``now + cap`` (module docstring, "Clocks"). Callers should check
    :func:`lockout_status` before matching; a failure recorded during a lockout still counts.
    """
    n = _check_now(now)
    failures = int(record.failures) + 1
    duration = policy.lockout_duration(failures)
    locked_until = float(record.locked_until or 0.0)
    permanent = bool(record.permanent_lock)
    last = float(record.last_attempt or 0.0)
    in_force = permanent or locked_until > n
    cap = _cap_s(policy, failures)
    t = max(n, last) if in_force else max(n, min(last, n + cap))
    if math.isinf(duration):
        permanent = True
    elif duration > 0:
        end = t + duration if in_force else min(t + duration, n + cap)
        locked_until = max(locked_until, end)
    return _replace(
        record, failures=failures, locked_until=locked_until, permanent_lock=permanent, last_attempt=t
    )


def record_success(record: R, now: float) -> R:
    """A new record after a successful match at ``now``: failure count and timed lockout cleared.

    ``last_attempt`` is re-anchored to ``now``. A permanent lock is NOT lifted (a match
    must not even be attempted while it holds); only :func:`reset_lockout` lifts it.
    """
    return _replace(record, failures=0, locked_until=0.0, last_attempt=_check_now(now))


def reset_lockout(record: R) -> R:
    """A new record with every lockout lifted (after a stronger authentication, e.g. PIN)."""
    return _replace(record, failures=0, locked_until=0.0, permanent_lock=False, last_attempt=0.0)


def attempts_left(record: LockoutState, policy: Policy) -> int:
    """Failed matches still allowed before the next lockout step (0 if permanently locked).

    Does not look at the clock: use :func:`lockout_status` to know whether an attempt may
    be made right now.
    """
    if record.permanent_lock:
        return 0
    f = int(record.failures)
    left = policy.lockout_after - f % policy.lockout_after
    if policy.permanent_after is not None:
        left = min(left, max(policy.permanent_after - f, 0))
    return left
