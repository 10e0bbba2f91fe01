"""Decisions over frames (FrameDecision) and templates that follow the owner (adapt_gallery)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import faceunlock as fu
from faceunlock.decision import (
    DEFAULT_RULE, SINGLE_FRAME, AdaptRule, FrameDecision, FrameRule, adapt_gallery, confident_score,
)
from faceunlock.demo import data_image, new_view
from faceunlock.unlock import fused_score

T = 0.9


# ------------------------------------------------------------------ FrameDecision


def feed(rule: FrameRule, scores, owners=None):
    d = FrameDecision(T, rule)
    out = []
    for i, s in enumerate(scores):
        out.append(d.add(s, 0 if owners is None else owners[i]).granted)
    return d, out


def test_rule_validation():
    for k, n in ((0, 1), (3, 2), (1.0, 2)):
        with pytest.raises(ValueError):
            FrameRule(k, n)
    assert SINGLE_FRAME.name == "single frame" and DEFAULT_RULE.name == "2 of last 3"


def test_single_frame_rule_grants_on_first_hit():
    _, g = feed(SINGLE_FRAME, [0.5, 0.89, 0.9, 0.1])
    assert g == [False, False, True, True]


def test_k_of_n_needs_k_hits_inside_the_window():
    _, g = feed(FrameRule(2, 3), [0.95, 0.5, 0.5, 0.95, 0.5, 0.95])
    # hits at frames 0, 3, 5: 0 and 3 are 4 frames apart (outside a 3-window); 3 and 5 are inside
    assert g == [False, False, False, False, False, True]
    _, g = feed(FrameRule(2, 2), [0.95, 0.5, 0.95, 0.95])
    assert g == [False, False, False, True]
    _, g = feed(FrameRule(3, 5), [0.95, 0.2, 0.95, 0.2, 0.95])
    assert g == [False, False, False, False, True]


def test_exact_threshold_counts_and_just_below_does_not():
    _, g = feed(FrameRule(2, 3), [T, np.nextafter(T, 0), T])
    assert g == [False, False, True]


def test_hits_must_be_for_one_user():
    _, g = feed(FrameRule(2, 3), [0.95, 0.95, 0.95], owners=[0, 1, 0])
    assert g == [False, False, True]
    d, g = feed(FrameRule(2, 3), [0.95, 0.95, 0.95, 0.95], owners=[0, 1, 2, 3])
    assert not any(g)


def test_verdict_score_is_the_weakest_granting_frame_and_template_the_latest():
    d = FrameDecision(T, FrameRule(2, 3))
    a, b = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)
    assert not d.add(0.97, 0, a).granted
    v = d.add(0.92, 0, b)
    assert v.granted and v.owner == 0 and v.score == pytest.approx(0.92) and v.frames == 2
    assert d.template is b and d.verdict == v
    assert d.add(0.1).granted and d.verdict == v  # a grant stays


# ------------------------------------------------------------------ adapt_gallery


def unit(v):
    v = np.asarray(v, np.float64)
    return (v / np.linalg.norm(v)).astype(np.float32)


def owner_gallery(rng, n=8, dim=64, spread=0.15):
    centre = unit(rng.normal(size=dim))
    g = np.stack([unit(centre + spread * rng.normal(size=dim) / np.sqrt(dim)) for _ in range(n)])
    return centre, g


def test_confident_score():
    assert confident_score(0.9, 0.25) == pytest.approx(0.925)
    assert confident_score(0.5, 0.0) == 0.5


def test_no_adaptation_when_not_live_or_not_confident():
    rng = np.random.default_rng(0)
    centre, g = owner_gallery(rng)
    v = unit(centre + 0.05 * rng.normal(size=centre.size) / 8)
    s = fused_score(g, v)[0]
    thr = s - 0.001
    rule = AdaptRule(margin=0.25, max_templates=15, protected=5)
    assert s < confident_score(thr, 0.25)
    assert adapt_gallery(g, v, s, thr, live=True, rule=rule) is None  # borderline
    assert adapt_gallery(g, v, 0.99, 0.5, live=False, rule=rule) is None  # liveness not passed
    assert adapt_gallery(g, v, float("nan"), 0.5, live=True, rule=rule) is None
    out = adapt_gallery(g, v, 0.99, 0.5, live=True, rule=rule)
    assert out is not None and out.shape == (9, g.shape[1]) and np.array_equal(out[:8], g) and np.array_equal(out[8], v)


def test_at_budget_the_most_redundant_unprotected_template_goes():
    rng = np.random.default_rng(1)
    centre, g = owner_gallery(rng, n=6)
    g[5] = unit(g[4] + 1e-3 * rng.normal(size=g.shape[1]))  # row 5 nearly duplicates row 4
    g[1] = unit(g[0] + 1e-4 * rng.normal(size=g.shape[1]))  # protected rows duplicate each other
    new = unit(centre + 0.3 * rng.normal(size=centre.size) / 8)  # a different look of the owner
    out = adapt_gallery(g, new, 0.99, 0.3, live=True, rule=AdaptRule(max_templates=6, protected=3))
    assert out is not None and out.shape == g.shape
    assert np.array_equal(out[:3], g[:3])  # enrolment rows stay, even the redundant pair
    assert any(np.array_equal(r, new) for r in out)
    kept = [any(np.array_equal(r, x) for r in out) for x in g[3:]]
    assert kept.count(False) == 1 and not (kept[1] and kept[2])  # one of the near-duplicate pair went


def test_a_new_template_that_adds_nothing_is_not_taken():
    rng = np.random.default_rng(2)
    centre, g = owner_gallery(rng, n=6)
    dup = unit(g[4] + 1e-5 * rng.normal(size=g.shape[1]))
    assert adapt_gallery(g, dup, 0.99, 0.3, live=True, rule=AdaptRule(max_templates=6, protected=3)) is None


def test_a_template_that_fails_the_enrolment_anchor_is_not_taken():
    rng = np.random.default_rng(3)
    centre, g = owner_gallery(rng, n=6)
    other = unit(rng.normal(size=centre.size))
    assert fused_score(g[:3], other)[0] < 0.5
    assert adapt_gallery(g, other, 0.99, 0.5, live=True, rule=AdaptRule(max_templates=8, protected=3)) is None


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        adapt_gallery(np.zeros((3, 4), np.float32), np.zeros(5, np.float32), 1.0, 0.5, live=True)


def test_impostor_near_misses_never_drift_the_gallery():
    """Many impostor attempts that come close (frames up to just under the threshold, some
    frames over it but never k of them, some granted borderline by a lookalike frame run):
    the gallery never changes and the impostor's similarity to it never rises."""
    rng = np.random.default_rng(4)
    dim = 64
    centre, g0 = owner_gallery(rng, n=10, dim=dim)
    imp = unit(rng.normal(size=dim))
    thr = 0.9
    rule = AdaptRule(margin=0.25, max_templates=12, protected=5)
    gallery = g0.copy()
    start = fused_score(gallery, imp)[0]
    granted_borderline = 0
    for attempt in range(300):
        # the impostor pushes each frame toward the owner just far enough to score near the threshold
        target = thr - 0.03 + 0.045 * rng.random(6)  # some frames a little over the threshold
        d = FrameDecision(thr, DEFAULT_RULE)
        for tgt in target:
            # template on the great circle from the impostor to the owner's centre with score ≈ tgt
            for a in np.linspace(0, 1, 200):
                v = unit((1 - a) * imp + a * centre)
                if fused_score(gallery, v)[0] >= tgt:
                    break
            s = fused_score(gallery, v)[0]
            verdict = d.add(s, 0, v)
        if d.verdict is not None:
            granted_borderline += 1
            new = adapt_gallery(gallery, d.template, d.verdict.score, thr, live=True, rule=rule)
            assert d.verdict.score < confident_score(thr, rule.margin)
            assert new is None
        assert np.array_equal(gallery, g0)
        assert fused_score(gallery, imp)[0] <= start + 1e-7
    assert granted_borderline > 0  # the test did exercise borderline grants


# ------------------------------------------------------------------ through FaceUnlock.unlock


@dataclass
class _Passed:
    live: bool = True
    final: bool = True
    reason: str = "live"
    hint: str | None = None


class AlwaysLive:
    """Liveness stand-in whose every verdict passes: isolates the adaptation path from the
    liveness check (tests/test_liveness_* exercise that on real motion and attacks)."""

    def session(self, **kwargs):
        return self

    def add(self, *args, **kwargs):
        return _Passed()

    def judge(self, *args, **kwargs):
        return _Passed()


@pytest.fixture(scope="module")
def engine():
    return fu.FaceEngine(threads=1)


def owner_frames(n=8):
    img = data_image("astronaut")
    return [new_view(img, a, s, g) for a, s, g in zip(np.linspace(-8, 8, n), np.linspace(0.92, 1.08, n), np.linspace(0.9, 1.1, n))]


def make(tmp_path, engine, **policy):
    store = fu.TemplateStore(tmp_path / "s.fus", key=b"k" * 32)
    p = fu.Policy(enroll_max_templates=6, lockout_after=10**6, permanent_after=None, **policy)
    u = fu.FaceUnlock(store, engine=engine, liveness=AlwaysLive(), policy=p, clock=lambda: 1_000_000.0)
    u.enroll("alice", owner_frames())
    return u, store


def test_unlock_adapts_after_confident_live_grants_within_budget(tmp_path, engine):
    u, store = make(tmp_path, engine)
    before = store.get("alice").templates.copy()
    assert before.shape[0] == 6
    img = data_image("astronaut")
    changed = 0
    for i, (a, s) in enumerate([(12, 0.85), (-12, 1.15), (5, 0.8), (-5, 1.2), (0, 1.0)]):
        r = u.unlock("alice", [new_view(img, a, s, 1.0)] * 12)
        assert r.granted
        after = store.get("alice").templates
        assert after.shape[0] <= 6 and np.array_equal(after[:5], before[:5])  # budget; enrolment rows stay
        changed += not np.array_equal(after, before)
    rec = store.get("alice")
    assert changed >= 1 and rec.meta.get("adapted", 0) >= 1


def test_adaptation_off_switch(tmp_path, engine):
    u, store = make(tmp_path, engine, adapt_templates=False)
    before = store.get("alice").templates.copy()
    img = data_image("astronaut")
    for a in (12, -12, 5):
        assert u.unlock("alice", [new_view(img, a, 0.9, 1.0)] * 12).granted
    assert np.array_equal(store.get("alice").templates, before)


def test_no_adaptation_without_liveness(tmp_path, engine):
    store = fu.TemplateStore(tmp_path / "s.fus", key=b"k" * 32)
    u = fu.FaceUnlock(store, engine=engine, liveness=False, clock=lambda: 1_000_000.0)
    u.enroll("alice", owner_frames())
    before = store.get("alice").templates.copy()
    assert u.unlock("alice", [data_image("astronaut")] * 3).granted
    assert np.array_equal(store.get("alice").templates, before)


def test_impostor_attempts_through_unlock_leave_the_gallery_alone(tmp_path, engine):
    u, store = make(tmp_path, engine)
    before = store.get("alice").templates.copy()
    grace = data_image("grace_hopper")
    s0 = fused_score(before, engine.template(grace))[0]
    for a in (0, 6, -6, 10):
        r = u.unlock("alice", [new_view(grace, a, 1.0, 1.0)] * 12)
        assert not r.granted
        assert np.array_equal(store.get("alice").templates, before)
    assert fused_score(store.get("alice").templates, engine.template(grace))[0] == pytest.approx(s0)


def test_unlock_uses_the_frame_rule(tmp_path, engine):
    store = fu.TemplateStore(tmp_path / "s.fus", key=b"k" * 32)
    u = fu.FaceUnlock(store, engine=engine, liveness=False, clock=lambda: 1_000_000.0)
    u.enroll("alice", owner_frames())
    astro, grace = data_image("astronaut"), data_image("grace_hopper")
    u.frame_rule = FrameRule(2, 3)
    r = u.unlock("alice", [astro, grace, astro])
    assert r.granted and r.frames_used == 3
    r = u.unlock("alice", [astro, grace, grace, astro, grace])
    assert not r.granted and r.reason is fu.Reason.NO_MATCH and r.frames_used == 5  # never 2 hits in 3 frames
    u.frame_rule = SINGLE_FRAME
    r = u.unlock("alice", [grace, astro, grace])
    assert r.granted and r.frames_used == 2
