"""Liveness core without models or data: passive parallax score, blink, challenge."""

from __future__ import annotations

import random

import numpy as np
import pytest

from faceunlock.liveness import Challenge, Observation, Prompt
from faceunlock.liveness import blink as B
from faceunlock.liveness import tracks as T
from faceunlock.synth import project, rotation


def face_cloud(kind: str, seed: int = 0) -> np.ndarray:
    """(468, 3) pixel points: 'face' = curved face with a protruding nose, 'plane', 'cylinder'."""
    rng = np.random.default_rng(seed)
    p = np.c_[rng.uniform(-1, 1, 468), rng.uniform(-1.2, 1.2, 468), np.zeros(468)]
    p[33], p[263] = (-0.5, -0.2, 0), (0.5, -0.2, 0)
    if kind == "face":
        p[:, 2] = 0.3 * (p[:, 0] ** 2 + 0.5 * p[:, 1] ** 2)
        p[T.NOSE_LANDMARKS, :2] = [(0, 0.25), (0, 0.15), (0, 0.05), (0, -0.05)]
        p[T.NOSE_LANDMARKS, 2] = -0.45
    elif kind == "cylinder":
        p[:, 2] = 0.3 * p[:, 0] ** 2
    return p * 100


def moved(points: np.ndarray, n: int = 45, yaw: float = 15, pitch: float = 8, noise_px: float = 0.3,
          seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        a = 2 * np.pi * k / (n - 1)
        r = rotation(yaw * np.sin(a), pitch * np.sin(a / 2))
        q = points @ r.T
        xy = project(q, (240, 240), 600.0) + rng.normal(0, noise_px, (len(q), 2))
        out.append(np.c_[xy, q[:, 2]])
    return np.array(out)


def test_rigid_face_passes_plane_and_cylinder_fail():
    face = T.judge(moved(face_cloud("face")), fps=15)
    assert face.live and face.score > 2 * T.PARALLAX_THRESHOLD, face
    r = T.judge(moved(face_cloud("plane")), fps=15)
    assert not r.live and r.score < T.PARALLAX_THRESHOLD / 2, r
    # a sheet bent with a 15 % sag: rejected, but with a small margin (0.0175 vs 0.02)
    r = T.judge(moved(face_cloud("cylinder")), fps=15)
    assert not r.live, r


def test_still_face_is_too_little_motion():
    r = T.judge(moved(face_cloud("face"), yaw=0.3, pitch=0.2), fps=15)
    assert not r.live and r.reason == "too little motion" and r.hint == T.HINT_TURN_HEAD


def test_homography_fit_is_exact_on_a_plane():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, (20, 2))
    h = np.array([[1.1, 0.05, 3], [-0.02, 0.95, -4], [1e-4, -2e-4, 1]])
    q = np.c_[src, np.ones(20)] @ h.T
    dst = q[:, :2] / q[:, 2:]
    assert T.homography_residual(src, dst) < 1e-6
    assert np.allclose(T.fit_homography(src, dst), h, atol=1e-6)


def ears_series(fps: float, blinks_at: list[float], dur: float = 5.0, closed_s: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(0, dur, 1 / fps)
    e = np.full_like(t, 0.3) + np.random.default_rng(0).normal(0, 0.005, t.size)
    for b in blinks_at:
        e[(t >= b) & (t < b + closed_s)] = 0.12
    return t, e


@pytest.mark.parametrize("fps", [10, 15, 30])
def test_blink_detection_at_10_to_30_fps(fps):
    t, e = ears_series(fps, [1.0, 2.5, 4.0])
    got = B.count_blinks(t, e)
    assert len(got) == 3 and all(abs(g - b) < 0.5 for g, b in zip(got, [1.0, 2.5, 4.0]))
    t, e = ears_series(fps, [])
    assert B.count_blinks(t, e) == []
    t, e = ears_series(fps, [2.0], closed_s=1.5)  # eyes closed for 1.5 s: not a blink
    assert B.count_blinks(t, e) == []


def test_random_challenge_is_unpredictable_and_well_formed():
    seqs = [tuple(Challenge.random().prompts) for _ in range(300)]
    assert all(2 <= len(s) <= 3 and len(set(s)) == len(s) for s in seqs)
    assert len(set(seqs)) > 20  # 12 ordered pairs + 24 ordered triples exist
    a = Challenge.random(rng=random.Random(7)).prompts
    assert a == Challenge.random(rng=random.Random(7)).prompts  # injectable for tests


def obs_stream(poses, fps=15.0, t0=0.0, template=None, shift=None):
    cloud = face_cloud("face")
    out = []
    for k, (yaw, pitch) in enumerate(poses):
        q = cloud @ rotation(yaw, pitch).T
        xy = project(q, (240, 240), 600.0)
        if shift is not None and k >= shift[0]:
            xy = xy + shift[1]
        tpl = template(k) if template else None
        out.append(Observation(t0 + k / fps, np.c_[xy, q[:, 2]], tpl, 1))
    return out


def ramp(a, b, n):
    return list(zip(np.linspace(a[0], b[0], n), np.linspace(a[1], b[1], n)))


def test_challenge_turn_left_then_up_passes():
    poses = [(0, 0)] * 5 + ramp((0, 0), (22, 0), 10) + ramp((22, 0), (0, 0), 8) + ramp((0, 0), (0, 16), 10)
    ch = Challenge([Prompt.TURN_LEFT, Prompt.LOOK_UP])
    st = ch.run(obs_stream(poses))
    assert st.done and st.passed, st


def test_challenge_wrong_move_and_deadline_fail():
    ch = Challenge([Prompt.TURN_LEFT, Prompt.LOOK_UP])
    st = ch.run(obs_stream([(0, 0)] * 5 + ramp((0, 0), (-22, 0), 10)))
    assert st.done and not st.passed and "wrong response" in st.reason
    ch = Challenge([Prompt.TURN_RIGHT, Prompt.BLINK], step_timeout_s=2.0)
    st = ch.run(obs_stream([(0, 0)] * 60))  # 4 s of a still face
    assert not st.passed and "timed out" in st.reason
    # the same response but too late
    ch = Challenge([Prompt.TURN_RIGHT], step_timeout_s=2.0)
    st = ch.run(obs_stream([(0, 0)] * 40 + ramp((0, 0), (-22, 0), 8)))
    assert not st.passed and "timed out" in st.reason


def test_challenge_identity_constancy():
    a = np.eye(4)[0]
    b = np.eye(4)[1]
    poses = [(0, 0)] * 5 + ramp((0, 0), (22, 0), 10)
    ch = Challenge([Prompt.TURN_LEFT], identity_threshold=0.8)
    assert ch.run(obs_stream(poses, template=lambda k: a)).passed
    ch = Challenge([Prompt.TURN_LEFT], identity_threshold=0.8)
    st = ch.run(obs_stream(poses, template=lambda k: a if k < 7 else b))
    assert not st.passed and st.reason == "a different face"
    ch = Challenge([Prompt.TURN_LEFT])
    st = ch.run(obs_stream(poses, shift=(8, np.array([300.0, 0.0]))))
    assert not st.passed and "jumped" in st.reason
    ch = Challenge([Prompt.TURN_LEFT])
    o = obs_stream(poses)
    o[6] = Observation(o[6].t, o[6].landmarks, None, 2)
    assert "more than one face" in ch.run(o).reason


def feature_face(kind: str) -> np.ndarray:
    """(468, 3) points with the 2-D test's landmarks placed like a face: eye corners, brows
    and mouth corners on a plane, the nose landmarks 0.45 IOD (IOD = 100 px) in front of
    it for 'face' and on it for 'plane'."""
    p = face_cloud("plane")
    p[[33, 133, 362, 263], :2] = [(-50, -20), (-18, -20), (18, -20), (50, -20)]
    p[[70, 105, 107, 336, 334, 300], :2] = [(-50, -45), (-35, -50), (-15, -48), (15, -48), (35, -50), (50, -45)]
    p[[61, 291], :2] = [(-25, 45), (25, 45)]
    p[T.PROTRUDING, :2] = [(0, 15), (0, 5), (-12, 18), (12, 18), (0, 22)]
    p[T.PROTRUDING, 2] = -45.0 if kind == "face" else 0.0
    return p


def test_parallax_ratio_small_turn_face_vs_strongly_tilted_sheet():
    # a head turning ±4°: little foreshortening of the eye/brow area, clear nose parallax
    face = T.judge(moved(feature_face("face"), yaw=4, pitch=2, noise_px=0.2), fps=15)
    assert face.live and face.score > 2 * T.PARALLAX_THRESHOLD, face
    # a sheet swung by ±25°: strong foreshortening, no parallax
    sheet = T.judge(moved(feature_face("plane"), yaw=25, pitch=15, noise_px=0.2), fps=15)
    assert not sheet.live and sheet.score < T.PARALLAX_THRESHOLD / 2, sheet
    assert sheet.cues["foreshortening"] > face.cues["foreshortening"]


def test_parallax_ratio_pairs_exact_on_a_plane():
    tr = moved(feature_face("plane"), n=6, yaw=20, pitch=10, noise_px=0.0)
    shift, fore = T.parallax_ratio_pairs(tr, np.array([[0, 3], [1, 4]]))
    assert shift.max() < 0.02 and fore.max() > 0.005  # perspective: not exactly affine
