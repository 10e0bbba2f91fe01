"""Review 2 (fail-open): the passive verdict takes each cue's median over the evidence
frames independently, and np.median of an even count averages the two middle values. A
sleeping owner (live texture, eyes shut) alternated with the owner's photo (eyes open,
print texture) satisfies BOTH medians at every even frame count although no single frame
shows a live face with open eyes. Models are not loaded (the scripted engine and texture
stand-in of test_review_failopen)."""

from __future__ import annotations

import numpy as np

import faceunlock as fu
from conftest import eye_landmarks
from faceunlock.liveness import blink as B
from faceunlock.liveness.passive import PassiveSession
from faceunlock.unlock import EYE_OPEN_KEY, EYE_OPEN_N_KEY
from test_review_failopen import ScriptedEngine, make_unlock, scripted_frames, unit, DIM


def _with_eyes(base: np.ndarray, ear: float) -> np.ndarray:
    lm = np.array(base, np.float32, copy=True)
    eyes = eye_landmarks(ear)
    for i in B.RIGHT_EYE + B.LEFT_EYE:
        lm[i] = eyes[i]
    return lm


class SplitTexture:
    """MiniFASNet stand-in: the live (sleeping) owner 0.9, the owner's photo 0.1."""

    def score(self, frame, box) -> float:
        return 0.1 if int(frame[0, 0, 0]) == 1 else 0.9


def test_sleeping_owner_plus_photo_must_not_pass_texture_and_attention(tmp_path):
    owner = unit(np.random.default_rng(1).normal(size=DIM))
    base = ScriptedEngine([owner]).landmarks
    # 0: the owner asleep, live (EAR 0.05); 1: the owner's photo, eyes open (EAR 0.35)
    lms = {0: _with_eyes(base, 0.05), 1: _with_eyes(base, 0.35)}
    u, store = make_unlock(tmp_path, [owner, owner], landmarks=lms)
    u.liveness._texture = SplitTexture()
    u.policy = fu.Policy(require_attention=True)
    rec = store.get("alice")
    store.put("alice", type(rec)(templates=rec.templates, embedder=rec.embedder, created=rec.created,
                                 meta={EYE_OPEN_KEY: 0.30, EYE_OPEN_N_KEY: 20}))  # bar 0.63 x 0.30 = 0.189
    asleep = u.unlock("alice", scripted_frames([0] * 120))
    assert not asleep.granted and asleep.liveness.reason == "eyes closed"  # control
    u.reset_lockout("alice")
    photo = u.unlock("alice", scripted_frames([1] * 120))
    assert not photo.granted and photo.liveness.reason.startswith("texture")  # control
    u.reset_lockout("alice")
    r = u.unlock("alice", scripted_frames([0, 1] * 60))
    assert not r.granted, (f"granted: no frame was live with open eyes, yet the texture median "
                           f"{r.liveness.cues['texture']:.2f} and the EAR median {r.liveness.cues['eye_aspect']:.3f} "
                           f"both passed on {r.liveness.frames} frames")


def test_cue_split_in_the_passive_session():
    """The same at the PassiveSession level: 4 live closed-eye + 4 photo open-eye frames."""
    rng = np.random.default_rng(0)
    patch0 = rng.uniform(0, 255, (32, 32)).astype(np.float32)
    closed = (eye_landmarks(0.05), 0.9)
    opened = (eye_landmarks(0.35), 0.1)
    for order in ([closed, opened] * 4, [closed] * 4 + [opened] * 4):
        s = PassiveSession(require_attention=True, attention_baseline=0.30, parallax_hold=False)
        for k, (lm, tex) in enumerate(order):
            v = s.add(k / 30, 1, lm, None, tex, patch0 + k * np.linspace(0, 2, 32)[None, :].astype(np.float32))
        assert not v.live, (v.reason, v.cues)
