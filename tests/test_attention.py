"""Attention relative to the owner's enrolment (issue 11 item 7) and enroll(append=True)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import faceunlock as fu
from conftest import eye_landmarks
from faceunlock.demo import data_image, new_view
from faceunlock.liveness import blink as B
from faceunlock.liveness.passive import ATTENTION_MIN_EAR, ATTENTION_RATIO, PassiveSession, attention_bar
from faceunlock.unlock import EYE_OPEN_KEY, EYE_OPEN_N_KEY


def owner_frames(n: int = 8) -> list[np.ndarray]:
    img = data_image("astronaut")
    return [new_view(img, a, s, g) for a, s, g in zip(np.linspace(-8, 8, n), np.linspace(0.92, 1.08, n),
                                                       np.linspace(0.9, 1.1, n))]


def squeeze_eyes(landmarks: np.ndarray, target: float) -> np.ndarray:
    """``landmarks`` with both eyes' lids moved together (or apart) about their midpoints so
    that each eye's aspect ratio is ``target``: the eyelid closure a sleeping face shows."""
    lm = np.array(landmarks, np.float64, copy=True)
    for eye in (B.RIGHT_EYE, B.LEFT_EYE):
        f = target / B._ear(lm, eye)
        for up, down in ((eye[1], eye[5]), (eye[2], eye[4])):
            m = 0.5 * (lm[up] + lm[down])
            lm[up], lm[down] = m + f * (lm[up] - m), m + f * (lm[down] - m)
    return lm


def _feed(s: PassiveSession, n: int, ear: float):
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 255, (32, 32)).astype(np.float32)
    v = None
    for k in range(n):
        patch = base + k / max(1, n - 1) * np.linspace(0, 8, 32)[None, :] + rng.normal(0, 0.3, (32, 32))
        v = s.add(k / 30, 1, eye_landmarks(ear), None, 0.9, patch.astype(np.float32))
    return v


# ---------------------------------------------------------------------------- pure rules
def test_attention_bar_is_relative_with_an_absolute_floor():
    assert ATTENTION_RATIO > 0
    assert attention_bar(None) == ATTENTION_MIN_EAR
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        assert attention_bar(bad) == ATTENTION_MIN_EAR
    assert attention_bar(0.30, 0.15, 0.63) == pytest.approx(0.189)
    assert attention_bar(0.20, 0.15, 0.63) == 0.15  # a narrow-eyed owner keeps the floor


def test_session_judges_eyes_against_the_owners_baseline():
    ear = 0.17  # over the absolute floor, well under 0.63 × an owner's open 0.30
    assert ATTENTION_MIN_EAR < ear < ATTENTION_RATIO * 0.30
    assert _feed(PassiveSession(require_attention=True), 12, ear).live  # absolute rule: passes
    v = _feed(PassiveSession(require_attention=True, attention_baseline=0.30), 12, ear)
    assert not v.live and v.reason == "eyes closed" and v.hint
    assert v.cues["eye_aspect_required"] == pytest.approx(ATTENTION_RATIO * 0.30)
    assert _feed(PassiveSession(require_attention=True, attention_baseline=0.30), 12, 0.29).live
    assert _feed(PassiveSession(require_attention=False, attention_baseline=0.30), 12, ear).live
    assert _feed(PassiveSession(require_attention=True, attention_baseline=None), 12, ear).live


def test_blink_troughs_give_the_deepest_frame():
    t = np.arange(60) / 30
    ears = np.full(60, 0.30)
    ears[30:34] = [0.22, 0.12, 0.16, 0.24]
    assert B.blink_troughs(t, ears) == [(pytest.approx(t[31]), pytest.approx(0.12))]
    assert B.open_eye_ear([0.3, 0.31, 0.1, float("nan"), 0.29]) == pytest.approx(0.295)
    assert B.open_eye_ear([float("nan")]) is None


# ---------------------------------------------------------------------------- FaceUnlock
@pytest.fixture
def stills(tmp_path, engine):
    return fu.FaceUnlock(fu.TemplateStore(tmp_path / "s.fus", key=b"k" * 32), engine=engine, liveness=False,
                         clock=lambda: 1_000_000.0)


def test_enrolment_stores_the_open_eye_baseline(stills, engine):
    frames = owner_frames()
    stills.enroll("alice", frames)
    meta = stills.store.get("alice").meta
    ears = [B.eye_aspect_ratio(engine.detect(f)[0].landmarks) for f in frames]
    assert meta[EYE_OPEN_KEY] == pytest.approx(float(np.median(ears)), abs=1e-4)
    assert meta[EYE_OPEN_N_KEY] == len(frames)
    stills.enroll("alice", frames[:6], append=True)  # appending merges, frame-weighted
    meta2 = stills.store.get("alice").meta
    assert meta2[EYE_OPEN_N_KEY] == len(frames) + 6
    assert min(meta[EYE_OPEN_KEY], np.median(ears[:6])) - 1e-4 <= meta2[EYE_OPEN_KEY] <= \
        max(meta[EYE_OPEN_KEY], np.median(ears[:6])) + 1e-4


def test_append_keeps_the_enrolment_core_and_aligned_poses(stills):
    pol = stills.policy
    stills.enroll("alice", owner_frames(8))
    first = stills.store.get("alice")
    assert first.templates.shape[0] == 8 == len(first.meta["poses"])
    for n in (8, 9, 7):
        stills.enroll("alice", owner_frames(n), append=True)
        rec = stills.store.get("alice")
        assert rec.templates.shape[0] == pol.enroll_max_templates
        assert len(rec.meta["poses"]) == rec.templates.shape[0]  # aligned, not growing without bound
        # the enrolment core (never replaced by adaptation either) survives every append
        np.testing.assert_array_equal(rec.templates[:pol.enroll_min_templates],
                                      first.templates[:pol.enroll_min_templates])
        assert rec.meta["poses"][:pol.enroll_min_templates] == first.meta["poses"][:pol.enroll_min_templates]
    # and the rest are the newest: the last append's templates are all there, at the end
    rep = stills.enroll("alice", owner_frames(7), append=True)
    rec = stills.store.get("alice")
    assert rep.templates == pol.enroll_max_templates
    assert [tuple(p) for p in rec.meta["poses"][-len(rep.poses):]] == [tuple(p) for p in rep.poses]


def test_append_realigns_an_old_store_whose_poses_outgrew_its_templates(stills):
    stills.enroll("alice", owner_frames(8))
    rec = stills.store.get("alice")
    stale = [(99.0, 99.0)] * 20 + rec.meta["poses"]  # 0.2.0 appended poses forever
    stills.store.update("alice", lambda r: dataclasses.replace(r, meta={**r.meta, "poses": stale}))
    stills.enroll("alice", owner_frames(6), append=True)
    got = stills.store.get("alice")
    assert len(got.meta["poses"]) == got.templates.shape[0] == 14
    assert [tuple(p) for p in got.meta["poses"][:8]] == [tuple(p) for p in rec.meta["poses"]]


def _grant(u: fu.FaceUnlock, frames, **kw):
    u.reset_lockout("alice")
    return u.unlock("alice", frames, fps=15, **kw)


def test_closed_eyes_are_refused_relative_to_the_owners_baseline(tmp_path, engine, monkeypatch):
    from faceunlock import synth

    img = data_image("astronaut")
    head = synth.render_head_motion(img, engine.detect(img)[0].landmarks, 30)
    store = fu.TemplateStore(tmp_path / "s.fus", key=b"k" * 32)
    u = fu.FaceUnlock(store, engine=engine)
    poses = synth.head_trajectory(12, 20.0, 12.0, 0.7)  # enrol as the demo does (test_unlock.rendered_sweep)
    sweep = synth.render_head_motion(img, engine.detect(img)[0].landmarks, poses=poses)
    u.enroll("alice", owner_frames() + sweep)
    base = store.get("alice").meta[EYE_OPEN_KEY]
    bar = ATTENTION_RATIO * base
    assert bar > ATTENTION_MIN_EAR + 0.01, base  # the owner's relative bar is above the floor
    target = 0.5 * (ATTENTION_MIN_EAR + bar)  # eyes half shut: over the floor, under the owner's bar

    open_ = _grant(u, head)
    assert open_.granted and open_.liveness.live, open_

    real_detect = engine.detect

    def sleepy(frame):
        return [dataclasses.replace(f, landmarks=squeeze_eyes(f.landmarks, target)) for f in real_detect(frame)]

    monkeypatch.setattr(engine, "detect", sleepy)
    shut = _grant(u, head)
    assert not shut.granted and shut.reason is fu.Reason.LIVENESS_FAILED, shut
    assert shut.liveness.reason == "eyes closed" and shut.hint
    assert shut.liveness.cues["eye_aspect"] == pytest.approx(target, abs=1e-3)
    assert shut.liveness.cues["eye_aspect_required"] == pytest.approx(bar, abs=1e-6)
    u.reset_lockout("alice")
    who = u.identify(head, fps=15)  # identify judges the identified user's eyes the same way
    assert who.user is None and who.reason is fu.Reason.LIVENESS_FAILED

    # the off switch
    off = fu.FaceUnlock(store, engine=engine, policy=fu.Policy(require_attention=False))
    assert _grant(off, head).granted

    # a record enrolled before the baseline was stored: the absolute floor alone (passes here)
    store.update("alice", lambda r: dataclasses.replace(
        r, meta={k: v for k, v in r.meta.items() if k not in (EYE_OPEN_KEY, EYE_OPEN_N_KEY)}))
    old = _grant(u, head)
    assert old.granted, old
    assert old.liveness.cues["eye_aspect_required"] == ATTENTION_MIN_EAR


# ---------------------------------------------------------------------------- eval-attention
def test_eval_attention_rules_on_a_synthetic_clip():
    from faceunlock.evaluation import attention_eval as A

    fps = 10.0
    ear = np.full(90, 0.30)  # 9 s: enrolment window + two later 3-s windows
    ear[30:35] = 0.17  # the first later window starts with eyes half shut, then opens
    ear[62] = 0.12  # a blink trough in the second window (one frame at 10 fps)
    ear[61] = ear[63] = 0.22
    c = A.ClipEyes("x", "p", "src", fps, ear, np.ones(90, np.int16), 0.30, None)
    ws = A.windows(c)
    assert len(ws) == 2 and all(w.size == 30 for w in ws)
    bar = A.Rule(0.63).bar(0.30)
    assert A.window_rejected(ws[0][:8], bar, "window")  # 5 of 8 low: median under the bar
    assert not A.window_rejected(ws[0], bar, "window")  # live once more open frames arrive
    assert not A.window_rejected(ws[0], bar, "first 15")
    assert A.troughs(c) == [pytest.approx(0.17), pytest.approx(0.12)]  # the 0.5-s dip reads as a blink too
    res = A.evaluate_rules([c], {"p": "tune"}, [A.Rule(0.0), A.Rule(0.63), A.Rule(0.95)])
    assert res[A.Rule(0.0).name]["tune"]["closed"] == [1, 2]  # 0.12 < 0.15
    assert res[A.Rule(0.63).name]["tune"]["closed"] == [2, 2]
    assert res[A.Rule(0.63).name]["tune"]["open"]["first 8"] == [1, 2]
    assert res[A.Rule(0.95).name]["tune"]["open"]["first 8"] == [1, 2]
    best, _ = A.tune_ratio(res, [A.Rule(0.0), A.Rule(0.63), A.Rule(0.95)], A.Rule(0.0))
    assert best == A.Rule(0.0)  # 0.63 catches more but rejects an open-eye reading the absolute rule passes


@pytest.mark.parametrize("bad_n", [float("inf"), float("nan"), "x", None, -3, 0])
def test_appending_to_a_hand_edited_eye_baseline_starts_afresh(bad_n):
    """A stored open-eye count that is not a positive finite integer (a record edited by
    hand) is ignored when an appended enrolment merges its baseline, instead of raising."""
    from faceunlock.unlock import _merge_eye_open

    new = {EYE_OPEN_KEY: 0.3, EYE_OPEN_N_KEY: 12}
    assert _merge_eye_open({EYE_OPEN_KEY: 0.25, EYE_OPEN_N_KEY: bad_n}, new) == new
    merged = _merge_eye_open({EYE_OPEN_KEY: 0.25, EYE_OPEN_N_KEY: 4}, new)
    assert merged == {EYE_OPEN_KEY: round((0.25 * 4 + 0.3 * 12) / 16, 4), EYE_OPEN_N_KEY: 16}
