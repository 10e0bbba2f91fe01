"""Liveness: presentation-attack detection without depth or IR hardware.

Two defences (see docs/LIVENESS.md for method, figures and what is NOT defended):

* passive — :meth:`Liveness.check` and :meth:`Liveness.session` (what
  :class:`~faceunlock.FaceUnlock` runs on every attempt): per frame, the two MiniFASNet
  texture models (:mod:`faceunlock.liveness.texture`) on crops of the full frame around the
  detector's box; per attempt, the median real score of the face frames, a frozen-feed test
  (the picture must change more than its noise does), one identity throughout, one face,
  and optionally open eyes (:mod:`faceunlock.liveness.passive`). A still user passes
  without being asked to move.
* active (a step-up) — :meth:`Liveness.new_challenge`: 2–3 random prompts (turn left/right,
  look up, blink) with deadlines, answered by the same face throughout; the passive check
  runs on the same frames.

The 0.1.0 passive check (nose parallax, :mod:`faceunlock.liveness.tracks`) stays available as
:meth:`Liveness.judge` for comparison; it no longer decides.

Frames: (H, W, 3) uint8 RGB arrays, either bare (then ``fps`` gives their timing, 30 by
default) or ``(timestamp_s, frame)`` pairs (then the timestamps are used).

    import faceunlock as fu
    live = fu.Liveness()
    r = live.check(frames, fps=30)          # r.live, r.score, r.reason, r.hint, r.cues
    s = live.session()                      # frame by frame (what FaceUnlock does)
    for t, frame in camera:
        r = s.add(frame, live.engine.detect(frame), t)
        if r.live or r.final: break
    ch = live.new_challenge()
    for t, frame in camera:                 # show ch.state.prompt.value to the user
        st = ch.feed((t, frame))
        if st.done: break                   # st.passed

The scoring cores (``tracks``, ``blink``, ``challenge``, ``passive``) are pure numpy and never
import the engine; only :class:`Liveness` takes a :class:`~faceunlock.FaceEngine`, and the
texture models load on the first scored frame.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .challenge import Challenge, ChallengeState, Observation, Prompt
from .passive import ATTENTION_MIN_EAR, MIN_CHANGE, MIN_FRAMES, TEXTURE_THRESHOLD, PassiveSession, face_patch
from .tracks import HINT_TURN_HEAD, MIN_MOTION_DEG, PARALLAX_THRESHOLD, LivenessResult, judge

__all__ = ["Liveness", "LivenessSession", "LivenessResult", "Challenge", "ChallengeState", "Observation", "Prompt",
           "HINT_TURN_HEAD", "split_frames", "fps_of", "TEXTURE_THRESHOLD", "MIN_CHANGE"]


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


def _colourless(frame: np.ndarray, box) -> bool:
    """True when the face box of an RGB frame has R = G = B at every sampled pixel (a
    monochrome or IR camera: the texture models score such faces as prints)."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    c = frame[max(0, y0):min(h, y1):4, max(0, x0):min(w, x1):4]
    return c.size > 0 and bool((c[..., 0] == c[..., 1]).all() and (c[..., 1] == c[..., 2]).all())


class LivenessSession:
    """The passive check of one attempt, frame by frame (made by :meth:`Liveness.session`).

    :meth:`add` takes each frame read with the faces the engine found in it (the largest
    first, as :meth:`FaceEngine.detect` returns them): the first face is scored by the
    texture models, its template (given, or computed here when ``live.check_identity``) is
    checked against the previous face frame's, and a grey patch of the frame at the first face
    frame's box feeds the frozen-feed test. Frames without a face count as read. Returns the
    verdict so far.
    """

    def __init__(self, live: "Liveness", require_attention: bool | None = None) -> None:
        self.live = live
        # The identity check always applies to templates the caller gives (FaceUnlock gives
        # them for free); ``check_identity`` only decides whether add() computes them.
        self.passive = PassiveSession(
            identity_threshold=live.identity_threshold,
            texture_threshold=live.threshold, min_change=live.min_change,
            require_attention=live.require_attention if require_attention is None else require_attention,
            min_frames=live.min_frames, attention_min_ear=live.attention_min_ear, texture=live.use_texture)
        self.result: LivenessResult = self.passive.verdict()

    def add(self, frame: np.ndarray, faces: Sequence, t: float, template: np.ndarray | None = None, *,
            evidence: bool = True) -> LivenessResult:
        """One RGB frame read at ``t`` seconds (camera time) with its detected ``faces``.

        ``evidence=False``: the frame counts as read and its faces are counted (more than one
        face still fails), but nothing of it — texture, eyes, identity, change — counts toward
        a live verdict. :class:`~faceunlock.FaceUnlock` passes it for face frames that do not
        match the user, so the face judged live is always the face that matched."""
        p = self.passive
        if self.result.final:
            return self.result
        if not faces or not evidence:
            self.result = p.add(t, len(faces))
            return self.result
        f = faces[0]
        if p.ref_box is None:
            p.ref_box = tuple(float(v) for v in f.box)
        if template is None and p.identity_threshold > 0 and self.live.check_identity:
            template = self.live.engine.face_template(frame, f)
        tex = self.live.texture_check.score(frame, f.box) if self.live.use_texture else None
        self.result = p.add(t, len(faces), f.landmarks, template, tex, face_patch(frame, p.ref_box),
                            mono=_colourless(frame, f.box))
        return self.result


class Liveness:
    """Liveness checks over camera frames.

    Args:
        engine: a :class:`~faceunlock.FaceEngine` (default: a new single-thread one).
        threshold: median MiniFASNet real score (0..1) an attempt needs
            (:data:`~faceunlock.liveness.passive.TEXTURE_THRESHOLD`).
        min_change: frozen-feed test, grey levels (:data:`~faceunlock.liveness.passive.MIN_CHANGE`).
        identity_threshold: cosine similarity every face frame's template must keep with the
            previous one's (default: the engine's convenience threshold − 0.05); 0 disables it.
        check_identity: compute identity templates in :meth:`check` (≈ 7 ms per frame); a
            cost switch only: templates given to a session (FaceUnlock gives them) are always
            checked.
        require_attention: sessions require open eyes by default (FaceUnlock sets this
            from ``Policy.require_attention``).
        min_frames: face frames before a live verdict (8).
        texture: False = no texture models (change and identity only; tests, measurements).
        parallax_threshold, min_motion_deg: the 0.1.0 parallax check (:meth:`judge`).
        step_timeout_s, mirrored: passed to each :class:`Challenge`.
    """

    def __init__(self, engine=None, *, threshold: float = TEXTURE_THRESHOLD, min_change: float = MIN_CHANGE,
                 identity_threshold: float | None = None, check_identity: bool = True,
                 require_attention: bool = False, min_frames: int = MIN_FRAMES,
                 attention_min_ear: float = ATTENTION_MIN_EAR, texture: bool = True,
                 parallax_threshold: float = PARALLAX_THRESHOLD, min_motion_deg: float = MIN_MOTION_DEG,
                 step_timeout_s: float = 3.0, mirrored: bool = False) -> None:
        if engine is None:
            from ..engine import FaceEngine

            engine = FaceEngine(threads=1)
        self.engine = engine
        self.threshold = float(threshold)
        self.min_change = float(min_change)
        self.parallax_threshold = float(parallax_threshold)
        self.min_motion_deg = float(min_motion_deg)
        if identity_threshold is None:
            base = engine.embedder_spec.looser_threshold("the liveness identity threshold derives from it; "
                                                          "or pass identity_threshold")
            identity_threshold = base - 0.05
        self.identity_threshold = float(identity_threshold)
        self.check_identity = check_identity
        self.require_attention = bool(require_attention)
        self.min_frames = int(min_frames)
        self.attention_min_ear = float(attention_min_ear)
        self.use_texture = bool(texture)
        self.step_timeout_s = step_timeout_s
        self.mirrored = mirrored
        self._texture = None

    @property
    def texture_check(self):
        """The :class:`~faceunlock.liveness.texture.TextureCheck` (models load on first use)."""
        if self._texture is None:
            from .texture import TextureCheck

            self._texture = TextureCheck(threads=1)
        return self._texture

    # ------------------------------------------------------------------ passive
    def session(self, require_attention: bool | None = None) -> LivenessSession:
        """A frame-by-frame passive check (see :class:`LivenessSession`)."""
        return LivenessSession(self, require_attention)

    def check(self, frames: Iterable, fps: float | None = None) -> LivenessResult:
        """Passive check of a short clip: frames or ``(timestamp_s, frame)`` pairs; the
        verdict over all of them (:class:`~faceunlock.FaceUnlock` instead stops at the first
        live verdict of a :meth:`session`)."""
        imgs, ts = split_frames(frames, fps)
        s = self.session()
        for img, t in zip(imgs, ts):
            if s.add(img, self.engine.detect(img), t).final:
                break
        return s.result

    def judge(self, landmarks: list[np.ndarray], fps: float, templates: list[np.ndarray] | None = None,
              faces_per_frame: list[int] | None = None) -> LivenessResult:
        """The **0.1.0** passive verdict (nose parallax, :func:`~faceunlock.liveness.tracks.judge`)
        from per-frame landmarks (frames without a face left out) and optionally their
        identity templates; kept for comparison, it no longer decides."""
        thr = self.parallax_threshold
        if faces_per_frame and max(faces_per_frame) > 1:
            return LivenessResult(False, 0.0, "more than one face in view", None, thr, final=True)
        low = None
        if templates and len(templates) >= 2:
            low = float((np.stack(templates) @ templates[0]).min())
            if low < self.identity_threshold:
                return LivenessResult(False, 0.0, "face changed during the check", None, thr,
                                      {"identity_min_similarity": low}, len(templates), True)
        if not landmarks:
            return LivenessResult(False, 0.0, "no face", None, thr)
        r = judge(np.stack(landmarks), fps, threshold=thr, min_motion_deg=self.min_motion_deg)
        if low is not None:
            r.cues["identity_min_similarity"] = low
        return r

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
