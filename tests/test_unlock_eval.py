"""eval-unlock's dev-data suite: attempt replay, bounds, and parity with FaceUnlock.unlock."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import faceunlock as fu
from faceunlock.decision import DEFAULT_RULE, SINGLE_FRAME, FrameRule
from faceunlock.evaluation import unlock_eval as U
from faceunlock.unlock import CLEAR_MISS_FRAMES, CLEAR_MISS_MARGIN, fused_score

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces-dev" / "video_liveness" / "liveportrait_driving"


def test_replay_rule_budget_and_early_stop():
    t = 0.5
    assert U.replay_scores([0.6], t, SINGLE_FRAME, 10) == (True, 1)
    assert U.replay_scores([0.6], t, DEFAULT_RULE, 10) == (False, 1)
    assert U.replay_scores([0.6, None, 0.4, 0.6], t, DEFAULT_RULE, 10) == (True, 4)  # no-face frames do not count
    assert U.replay_scores([0.4, 0.6, 0.6], t, DEFAULT_RULE, 2) == (False, 2)  # budget
    low = t - CLEAR_MISS_MARGIN - 0.01
    scores = [low] * CLEAR_MISS_FRAMES + [0.9, 0.9]
    assert U.replay_scores(scores, t, SINGLE_FRAME, 10) == (False, CLEAR_MISS_FRAMES)  # ends early, as unlock does


def test_tally_bounds():
    a = U.Tally()
    for _ in range(300):
        a.add(False)
    assert a.rate == 0 and a.upper95 == pytest.approx(0.01)  # rule of three
    a.add(True)
    assert 1 / 301 < a.upper95 < 0.02
    assert U.Tally().cell(True) == "–"


def test_video_people_and_groups():
    root = VIDEOS.parents[2]
    if not (root / "faces-dev2" / "videos" / "videos.csv").is_file():
        pytest.skip("dev data not found")
    vids = U.dev_videos(root)
    people = {v.person for v in vids}
    assert len(vids) == 34 and len(people) == 33  # the two MEAD M030 clips are one person
    m030 = [v for v in vids if v.person == "MEAD/M030"]
    assert len(m030) == 2 and {v.group for v in m030} == {"East Asian"}
    halves = U.video_halves(vids)
    assert set(halves.values()) == {"tuning", "reporting"}
    assert halves["MEAD/M030"] in ("tuning", "reporting")


@pytest.fixture(scope="module")
def engine():
    return fu.FaceEngine(threads=1)


@pytest.mark.slow
def test_replay_matches_faceunlock_unlock(tmp_path, engine):
    """The replay in eval-unlock and FaceUnlock.unlock decide alike on real frames."""
    if not VIDEOS.is_dir():
        pytest.skip("dev videos not found")
    policy = fu.Policy(min_face_px=40, lockout_after=10**9, permanent_after=None, enroll_max_templates=5)
    frames = {}
    for name in ("d18", "d19"):
        gen, fps, n = U._frames(VIDEOS / f"{name}.mp4")
        frames[name] = [f for _, f in zip(range(150), gen)]
        gen.close()
    store = fu.TemplateStore(tmp_path / "s.fus", key=os.urandom(32))
    u = fu.FaceUnlock(store, engine=engine, liveness=False, policy=policy, clock=lambda: 1_000_000.0)
    u.enroll("d18", frames["d18"][:75])
    gallery = store.get("d18").templates
    thr = u.threshold
    checked = {True: 0, False: 0}
    for rule in (SINGLE_FRAME, FrameRule(2, 3), FrameRule(3, 5)):
        u.frame_rule = rule
        for name, start in (("d18", 90), ("d18", 120), ("d19", 0), ("d19", 100)):
            window = frames[name][start:start + policy.max_frames]
            scores = []
            for f in window:
                t = U._face_templates(engine, f)
                scores.append(None if t is None else fused_score(gallery, t)[0])
            want = U.replay_scores(scores, thr, rule, len(window))
            r = u.unlock("d18", window)
            assert (r.granted, r.frames_used) == want, (rule, name, start, scores)
            checked[r.granted] += 1
    assert checked[True] and checked[False]


@pytest.mark.slow
def test_evaluate_dev_on_the_faces_dev_videos(tmp_path, engine):
    if not VIDEOS.is_dir():
        pytest.skip("dev videos not found")
    root = tmp_path / "data"
    (root / "faces-dev" / "video_liveness").mkdir(parents=True)
    (root / "faces-dev" / "video_liveness" / "liveportrait_driving").symlink_to(VIDEOS)
    ev = U.evaluate_dev([engine], root, photos=False, max_windows=4, rules=[SINGLE_FRAME, DEFAULT_RULE],
                        cache=tmp_path / "cache")
    d = ev.as_dict()
    name = engine.embedder_spec.name
    rows = [r for r in d["rows"] if r["embedder"] == name and r["label"] == "all"]
    assert {r["rule"] for r in rows} == {SINGLE_FRAME.name, DEFAULT_RULE.name}
    gen = sum(r["genuine_attempts"] for r in rows if r["rule"] == DEFAULT_RULE.name)
    imp = sum(r["impostor_attempts"] for r in rows if r["rule"] == DEFAULT_RULE.name)
    assert gen > 0 and imp > 0
    # a stricter rule never grants an impostor that the single-frame rule refused
    for h in U.HALVES:
        one = {(r["half"]): r for r in rows if r["rule"] == SINGLE_FRAME.name}
        two = {(r["half"]): r for r in rows if r["rule"] == DEFAULT_RULE.name}
        if h in one:
            assert two[h]["false_accepts"] <= one[h]["false_accepts"]
            assert two[h]["false_rejects"] >= one[h]["false_rejects"]
    assert "videos" in ev.text() and "liveness" in ev.text()
    again = U.evaluate_dev([engine], root, photos=False, max_windows=4, rules=[SINGLE_FRAME, DEFAULT_RULE],
                           cache=tmp_path / "cache")  # from the cache: the same figures
    assert json.dumps(again.as_dict()["rows"]) == json.dumps(d["rows"])


class _AlwaysLive:
    """Liveness stand-in whose every verdict passes: eval-unlock leaves the liveness verdict
    out, so parity with a liveness-on unlock is checked with a check that always passes."""

    live, final, reason, hint = True, True, "live", None

    def session(self, **kwargs):
        return self

    def add(self, *args, **kwargs):
        return self


@pytest.mark.slow
def test_replay_matches_a_liveness_on_unlock(tmp_path, engine):
    """With liveness on, an attempt reads up to policy.timeout_s of camera time under the
    default frame rule; the replay over the same frames decides alike."""
    if not VIDEOS.is_dir():
        pytest.skip("dev videos not found")
    policy = fu.Policy(min_face_px=40, lockout_after=10**9, permanent_after=None, enroll_max_templates=5)
    frames = {}
    for name in ("d18", "d20"):
        gen, fps, n = U._frames(VIDEOS / f"{name}.mp4")
        frames[name] = [f for _, f in zip(range(180), gen)]
        gen.close()
    store = fu.TemplateStore(tmp_path / "s.fus", key=os.urandom(32))
    u = fu.FaceUnlock(store, engine=engine, liveness=_AlwaysLive(), policy=policy, clock=lambda: 1_000_000.0)
    u.enroll("d18", frames["d18"][:75])
    gallery = store.get("d18").templates
    thr = u.threshold
    outcomes = set()
    for name, start in (("d18", 100), ("d20", 0), ("d20", 90)):
        window = frames[name][start:start + 80]
        scores = []
        for f in window:
            t = U._face_templates(engine, f)
            scores.append(None if t is None else fused_score(gallery, t)[0])
        want = U.replay_scores(scores, thr, DEFAULT_RULE, len(window))
        r = u.unlock("d18", window, fps=30.0)
        assert (r.granted, r.frames_used) == want, (name, start, scores[:12])
        outcomes.add(r.granted)
    assert outcomes == {True, False}
