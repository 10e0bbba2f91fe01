"""Liveness: presentation-attack detection without depth or IR hardware.

Two defences (see docs/LIVENESS.md for method, figures and what is NOT defended):

* passive — :meth:`Liveness.check`: a real head that turns shows parallax (the nose moves
  differently from the eyes, brows and mouth corners) while its eye/brow area is barely
  foreshortened; a photo, a screen or a bent print moves as (nearly) one plane and must be
  tilted a lot, which foreshortens it. Needs ~1–3 s of video with a head turn of ≈ 5° or
  more (a UI should prompt "turn your head slightly").
* active — :meth:`Liveness.new_challenge`: 2–3 random prompts (turn left/right, look up,
  blink) with deadlines, answered by the same face throughout.

Frames: (H, W, 3) uint8 RGB arrays, either bare (then ``fps`` gives their timing, 30 by
default) or ``(timestamp_s, frame)`` pairs (then the timestamps are used).

    import faceunlock as fu
    live = fu.Liveness()
    r = live.check(frames, fps=30)          # r.live, r.score, r.reason, r.hint, r.cues
    ch = live.new_challenge()
    for t, frame in camera:                 # show ch.state.prompt.value to the user
        st = ch.feed((t, frame))
        if st.done: break                   # st.passed

The scoring core (``tracks``, ``blink``, ``challenge``) is pure numpy and never imports
the engine; only :class:`Liveness` takes a :class:`~faceunlock.FaceEngine`.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from .challenge import Challenge, ChallengeState, Observation, Prompt
from .tracks import HINT_TURN_HEAD, MIN_MOTION_DEG, PARALLAX_THRESHOLD, LivenessResult, judge

__all__ = ["Liveness", "LivenessResult", "Challenge", "ChallengeState", "Observation", "Prompt",
           "HINT_TURN_HEAD", "split_frames"]


def split_frames(frames: Iterable, fps: float | None = None) -> tuple[list[np.ndarray], list[float]]:
    """(frames, timestamps in s) from bare frames (timed by ``fps``, default 30) or
    ``(timestamp_s, frame)`` pairs."""
    out, ts = [], []
    for i, item in enumerate(frames):
        if isinstance(item, tuple) and len(item) == 2:
            ts.append(float(item[0]))
            out.append(item[1])
        else:
            ts.append(i / float(fps or 30.0))
            out.append(item)
    return out, ts


def fps_of(timestamps: list[float], default: float = 30.0) -> float:
    """Frame rate from timestamps (median interval), or ``default``."""
    if len(timestamps) < 2:
        return default
    d = float(np.median(np.diff(timestamps)))
    return 1.0 / d if d > 0 else default


class Liveness:
    """Liveness checks over camera frames.

    Args:
        engine: a :class:`~faceunlock.FaceEngine` (default: a new single-thread one).
        threshold: passive score needed (nose parallax per foreshortening; default
            :data:`~faceunlock.liveness.tracks.PARALLAX_THRESHOLD`).
        min_motion_deg: the mesh's head rotation range below which the verdict is "too
            little motion" (default 0: off; the 2-D nose-parallax gate always applies).
        identity_threshold: cosine similarity every frame's template must keep with the first
            (default: the engine's convenience threshold − 0.05); 0 disables the check.
        check_identity: compute identity templates in :meth:`check` (≈ 7 ms per frame).
        step_timeout_s, mirrored: passed to each :class:`Challenge`.
    """

    def __init__(self, engine=None, *, threshold: float = PARALLAX_THRESHOLD,
                 min_motion_deg: float = MIN_MOTION_DEG, identity_threshold: float | None = None,
                 check_identity: bool = True, step_timeout_s: float = 3.0, mirrored: bool = False) -> None:
        if engine is None:
            from ..engine import FaceEngine

            engine = FaceEngine(threads=1)
        self.engine = engine
        self.threshold = float(threshold)
        self.min_motion_deg = float(min_motion_deg)
        if identity_threshold is None:
            spec = engine.embedder_spec
            identity_threshold = float(spec.convenience_threshold or spec.threshold) - 0.05
        self.identity_threshold = float(identity_threshold)
        self.check_identity = check_identity
        self.step_timeout_s = step_timeout_s
        self.mirrored = mirrored

    # ------------------------------------------------------------------ passive
    def judge(self, landmarks: list[np.ndarray], fps: float, templates: list[np.ndarray] | None = None,
              faces_per_frame: list[int] | None = None) -> LivenessResult:
        """Passive verdict from per-frame landmarks (frames without a face left out) and,
        optionally, their identity templates (same length)."""
        if faces_per_frame and max(faces_per_frame) > 1:
            return LivenessResult(False, 0.0, "more than one face in view", None, self.threshold)
        low = None
        if templates and len(templates) >= 2:
            low = float((np.stack(templates) @ templates[0]).min())
            if low < self.identity_threshold:
                return LivenessResult(False, 0.0, "face changed during the check", None, self.threshold,
                                      {"identity_min_similarity": low}, len(templates))
        if not landmarks:
            return LivenessResult(False, 0.0, "no face", None, self.threshold)
        r = judge(np.stack(landmarks), fps, threshold=self.threshold, min_motion_deg=self.min_motion_deg)
        if low is not None:
            r.cues["identity_min_similarity"] = low
        return r

    def check(self, frames: Iterable, fps: float | None = None) -> LivenessResult:
        """Passive check of a short clip (≈ 1–3 s): frames or ``(timestamp_s, frame)`` pairs."""
        imgs, ts = split_frames(frames, fps)
        rate = fps or fps_of(ts)
        lms, tpls, counts = [], [], []
        for img in imgs:
            faces = self.engine.detect(img)
            counts.append(len(faces))
            if faces:
                lms.append(faces[0].landmarks)
                if self.check_identity:
                    tpls.append(self.engine.face_template(img, faces[0]))
        return self.judge(lms, rate, tpls or None, counts)

    # ------------------------------------------------------------------ active
    def observe(self, frame: np.ndarray, t: float, with_template: bool = True) -> Observation:
        """One frame → :class:`Observation` (landmarks and template of the largest face)."""
        faces = self.engine.detect(frame)
        if not faces:
            return Observation(t, None, None, 0)
        tpl = self.engine.face_template(frame, faces[0]) if with_template and self.identity_threshold > 0 else None
        return Observation(t, faces[0].landmarks, tpl, len(faces))

    def new_challenge(self, n: int | None = None, *, rng=None, clock=None) -> Challenge:
        """A random :class:`Challenge` (2–3 prompts unless ``n``) whose :meth:`Challenge.feed`
        takes frames. ``rng``/``clock`` are injectable for tests."""
        kw = {} if clock is None else {"clock": clock}
        return Challenge.random(n, rng=rng, step_timeout_s=self.step_timeout_s,
                                identity_threshold=self.identity_threshold, mirrored=self.mirrored,
                                observe=self.observe, **kw)
