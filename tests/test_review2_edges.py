"""Review 2 (edge input): each test FAILS on the code it was written against. No models
are loaded (the scripted engine of test_review_failopen stands in)."""

from __future__ import annotations

import numpy as np
import pytest

import faceunlock as fu
from conftest import eye_landmarks
from faceunlock.liveness.passive import PassiveSession
from test_review_failopen import SPEC, at_cosine, make_unlock, scripted_frames, unit, DIM


def test_passive_session_takes_2d_landmarks_as_documented():
    """PassiveSession.add documents ``(468, >=2) landmarks``; with a borderline texture
    score (the shipped parallax hold) 2-column landmarks crash verdict() after 2 s
    (ValueError from score_tracks: tracks must be (T, 468, 3)), instead of a verdict."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 255, (32, 32)).astype(np.float32)
    s = PassiveSession()
    for k in range(90):
        lm = eye_landmarks(0.3)[:, :2] + rng.normal(0, 0.5, (468, 2))
        v = s.add(k / 30, 1, lm, None, 0.5, base + k * np.linspace(0, 2, 32)[None, :].astype(np.float32))
    assert v.reason != "texture borderline: checking motion"


def test_fps_zero_is_refused_like_other_invalid_fps(tmp_path):
    """_match raises "fps must be a finite number > 0 (or None for 30)" for -30, inf and NaN,
    but ``fps or 30.0`` turns 0 (e.g. OpenCV's CAP_PROP_FPS of a camera that does not report
    it) into 30 silently."""
    rng = np.random.default_rng(1)
    owner = unit(rng.normal(size=DIM))
    u, _ = make_unlock(tmp_path, [owner])
    with pytest.raises(fu.FaceUnlockError):
        u.unlock("alice", (f for _, f in scripted_frames([0] * 30)), fps=0)


def test_repeated_large_timestamps_still_reach_the_deadline(tmp_path):
    """"a frame whose timestamp is not after the previous one's ... is taken as 1/fps later,
    so the deadline always comes" — not when the timestamp is large: t_prev + 1/30 ==
    t_prev once ulp(t) > 1/30 (t > 2**48 s, e.g. a stalled nanosecond clock passed as
    seconds), so a frozen clock reads MAX_ATTEMPT_FRAMES (1000) frames in one attempt."""
    rng = np.random.default_rng(1)
    owner, other = unit(rng.normal(size=DIM)), unit(rng.normal(size=DIM))
    near = at_cosine(owner, other, SPEC.threshold - 0.02)  # a near miss: never a clear miss
    u, _ = make_unlock(tmp_path, [owner, near])
    ok = u.unlock("alice", scripted_frames([1] * 2000, times=lambda j: 0.0))
    assert ok.frames_used <= 91  # control: a frozen clock at 0 reaches the 3-s deadline
    r = u.unlock("alice", scripted_frames([1] * 2000, times=lambda j: 1.7e18))
    assert r.frames_used <= 91, f"{r.frames_used} frames read in one attempt"


def test_tiny_timestamp_steps_give_a_verdict_not_an_overflow(tmp_path):
    """Strictly increasing, finite timestamps pass the sanitiser; steps of 5e-324 s make the
    hold's frame rate (n − 1) / span infinite and ``math.ceil(min_s * fps)`` raises
    OverflowError out of unlock() (not a FaceUnlockError) once a borderline texture score
    (0.5, in the hold band) reaches the hold."""
    rng = np.random.default_rng(1)
    owner = unit(rng.normal(size=DIM))
    u, _ = make_unlock(tmp_path, [owner])

    class Borderline:
        def score(self, frame, box) -> float:
            return 0.5

    u.liveness._texture = Borderline()
    r = u.unlock("alice", scripted_frames([0] * 30, times=lambda j: j * 5e-324))
    assert not r.granted
