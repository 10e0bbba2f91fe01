"""The passive verdict of an attempt: image texture, frame-to-frame change, identity, attention.

Pure numpy over per-frame numbers (no model is loaded here): :class:`PassiveSession` takes,
for every frame read, the number of faces, and for the face kept its landmarks, identity
template, MiniFASNet real score (``faceunlock.liveness.texture``) and a small grey patch of
the frame cut at a fixed place (:func:`face_patch` with the first face frame's box). After
each frame it gives the verdict over the frames so far (:meth:`PassiveSession.verdict`):

* **more than one face** in any frame, or an identity template below
  ``identity_threshold`` (cosine) against the previous face frame's — a swap is a sudden
  change; comparing with the first frame instead rejected live users whose head turned far
  (mobilefacenet-v1: cosine to the first frame down to 0.39 within a live 3-s window, to the
  previous frame ≥ 0.59 over the dev clips): rejected for good (``final``);
* fewer than ``min_frames`` face frames: not yet;
* **frozen feed** — the picture does not change: :class:`ChangeMeter` (below) under
  :data:`MIN_CHANGE`. A photo file fed as a video is the same image every frame; even
  re-encoded with noise each time, its change does not grow with time;
* **texture** — the lower median (:func:`lower_median`) real score of the face frames under
  ``texture_threshold`` (:data:`TEXTURE_THRESHOLD`): a print or a screen;
* **borderline texture hold** (``parallax_hold``) — a median just over the threshold (below
  :data:`~faceunlock.liveness.tracks.HOLD_BAND_HIGH`) is not trusted alone: the verdict waits
  for :data:`~faceunlock.liveness.tracks.HOLD_MIN_S` of face frames, then refuses while the
  0.1.0 parallax judge says the face moved like a flat sheet
  (:func:`~faceunlock.liveness.tracks.borderline_hold`). "Too little motion" never holds, so
  a still live user is at most delayed;
* **attention** (when asked) — the (lower) median eye aspect ratio of the face frames under
  :func:`attention_bar`: :data:`ATTENTION_MIN_EAR`, or, when the user's open-eye level from
  enrolment is known (``attention_baseline``), ``max(ATTENTION_MIN_EAR, ATTENTION_RATIO ×
  baseline)``: eyes closed;
* otherwise live.

Only the first two are final; the others may turn live as more frames arrive (a still user's
micro-motion accumulates), so a caller reading a camera keeps reading until live or out of
time. Patches are float32 grey levels 0..255; times are seconds; landmarks in pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from .blink import eye_aspect_ratio
from .tracks import HOLD_BAND_HIGH, LivenessResult, borderline_hold

__all__ = ["PATCH_SIZE", "MIN_CHANGE", "TEXTURE_THRESHOLD", "ATTENTION_MIN_EAR", "ATTENTION_RATIO", "MIN_FRAMES",
           "attention_bar", "face_patch", "lower_median",
           "ChangeMeter", "PassiveSession", "HINT_FACE_CAMERA", "HINT_OPEN_EYES", "HINT_MOVE"]

PATCH_SIZE = 32
#: grey levels (0..255): change of the face patch beyond its frame-to-frame noise that a live
#: feed shows within 8 frames. Measured (docs/LIVENESS.md): real clips ≥ 0.29 (1 % quantile
#: 0.56) over 8 frames; the same frame repeated 0; re-encoded each repeat (JPEG q90 after
#: Gaussian noise σ 1, 2 or 5 grey levels) ≤ 0.07.
MIN_CHANGE = 0.15
#: median MiniFASNet real score (0..1) of an attempt's face frames that a live face reaches;
#: set on the tuning half of the dev data (docs/LIVENESS.md).
TEXTURE_THRESHOLD = 0.46
#: median eye aspect ratio (faceunlock.liveness.blink) of an attempt's face frames below which
#: the eyes count as closed; set on the tuning half of the dev videos (docs/LIVENESS.md).
ATTENTION_MIN_EAR = 0.15
#: fraction of the user's own open-eye EAR (the median over their enrolment frames,
#: ``UserRecord.meta["eye_open_ear"]``) that an attempt's median EAR must reach; set on the
#: tuning half of the dev videos (docs/LIVENESS.md, "Attention").
ATTENTION_RATIO = 0.63
MIN_FRAMES = 8

HINT_FACE_CAMERA = "face the camera in even light"
HINT_OPEN_EYES = "open your eyes and look at the camera"
HINT_MOVE = "blink or move slightly"
HINT_HOLD = "look at the camera a moment longer"
HINT_COLOUR = "this check needs a colour camera: a monochrome or infrared picture scores as a print"


def attention_bar(baseline: float | None = None, floor: float = ATTENTION_MIN_EAR,
                  ratio: float = ATTENTION_RATIO) -> float:
    """Median eye aspect ratio an attempt needs: ``max(floor, ratio × baseline)``, or ``floor``
    alone when the user's open-eye level ``baseline`` is unknown (records enrolled before it
    was stored) or not a finite positive number."""
    floor = float(floor)
    if baseline is None:
        return floor
    b = float(baseline)
    if not np.isfinite(b) or b <= 0:
        return floor
    return max(floor, float(ratio) * b)


def face_patch(frame_rgb: np.ndarray, box_xyxy, size: int = PATCH_SIZE) -> np.ndarray:
    """(size, size) float32 grey patch of the (H, W, 3) uint8 RGB ``frame_rgb`` inside the
    pixel box ``box_xyxy`` (clipped to the frame), averaged down by area (which also
    averages away most sensor noise)."""
    h, w = frame_rgb.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    x0, y0 = min(max(0, int(x0)), w - 1), min(max(0, int(y0)), h - 1)
    x1, y1 = max(min(w, int(np.ceil(x1))), x0 + 1), max(min(h, int(np.ceil(y1))), y0 + 1)
    g = cv2.cvtColor(np.ascontiguousarray(frame_rgb[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    return cv2.resize(g, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)


def lower_median(values) -> float:
    """The lower median (of an even count, the smaller middle value): at or above a bar only
    when a strict majority of the values is. Each cue of the verdict (texture, eyes) is judged
    this way, so two cues met by two different halves of the frames — a sleeping owner's live
    face alternated with the owner's open-eyed photo — cannot both pass: two strict majorities
    share a frame."""
    return float(np.quantile(np.asarray(values, np.float64), 0.5, method="lower"))


class ChangeMeter:
    """How much a fixed patch of the picture changed beyond its frame-to-frame noise.

    ``change`` = max over frames j of mean |P_j − P_0| minus the median over j of mean
    |P_j − P_{j−1}| (grey levels). Noise, re-encoding and flicker change every frame by
    about the same amount whatever the lag, so they cancel; motion (a living face, a hand
    holding a photo) accumulates with the lag and remains. A frozen feed stays near 0.
    """

    def __init__(self) -> None:
        self._first: np.ndarray | None = None
        self._last: np.ndarray | None = None
        self._max_from_first = 0.0
        self._steps: list[float] = []

    def add(self, patch: np.ndarray) -> None:
        p = np.asarray(patch, np.float32)
        if self._first is None:
            self._first = self._last = p
            return
        self._max_from_first = max(self._max_from_first, float(np.abs(p - self._first).mean()))
        self._steps.append(float(np.abs(p - self._last).mean()))
        self._last = p

    @property
    def frames(self) -> int:
        return 0 if self._first is None else len(self._steps) + 1

    @property
    def change(self) -> float:
        if not self._steps:
            return 0.0
        return self._max_from_first - float(np.median(self._steps))


class PassiveSession:
    """The passive verdict over the frames of one attempt, frame by frame (see the module
    docstring). Feed every frame read with :meth:`add`; read :meth:`verdict`.

    Args:
        identity_threshold: cosine every template must keep with the previous face frame's
            (0 = off).
        texture_threshold: median real score needed (:data:`TEXTURE_THRESHOLD`).
        min_change: :data:`MIN_CHANGE` (grey levels).
        require_attention: require open eyes (median EAR ≥ :attr:`attention_required`).
        attention_min_ear: the absolute floor (:data:`ATTENTION_MIN_EAR`).
        attention_baseline: the user's open-eye EAR from enrolment, or None (then the floor
            alone decides); FaceUnlock sets it once it knows whose face matched.
        attention_ratio: fraction of ``attention_baseline`` needed (:data:`ATTENTION_RATIO`).
        min_frames: face frames before any live verdict (:data:`MIN_FRAMES`).
        texture: False = no texture scores are fed (the verdict then rests on change and
            identity only; for tests and for measuring the texture cue's share).
        parallax_hold: the borderline texture hold (module docstring); False turns it off.
    """

    def __init__(self, *, identity_threshold: float = 0.0, texture_threshold: float = TEXTURE_THRESHOLD,
                 min_change: float = MIN_CHANGE, require_attention: bool = False, min_frames: int = MIN_FRAMES,
                 attention_min_ear: float = ATTENTION_MIN_EAR, texture: bool = True,
                 attention_baseline: float | None = None, attention_ratio: float = ATTENTION_RATIO,
                 parallax_hold: bool = True) -> None:
        self.identity_threshold = float(identity_threshold)
        self.texture_threshold = float(texture_threshold)
        self.min_change = float(min_change)
        self.require_attention = bool(require_attention)
        self.attention_min_ear = float(attention_min_ear)
        self.attention_baseline = attention_baseline
        self.attention_ratio = float(attention_ratio)
        self.min_frames = int(min_frames)
        self.texture = texture
        self.parallax_hold = bool(parallax_hold)
        self.landmarks: list[np.ndarray] = []  # (468, 3) pixels per face frame, for the hold
        self.mono_frames = 0  # face frames without colour (a monochrome / IR camera)
        self._hold: tuple[int, float, str | None] | None = None  # (face frames, score, verdict) last judged
        self.meter = ChangeMeter()
        self.ref_box: tuple[float, float, float, float] | None = None
        self.textures: list[float] = []
        self.ears: list[float] = []
        self.times: list[float] = []
        self.max_faces = 0
        self.min_identity = 1.0
        self._ref_template: np.ndarray | None = None
        self.frames_read = 0

    def add(self, t: float, faces: int, landmarks: np.ndarray | None = None, template: np.ndarray | None = None,
            texture: float | None = None, patch: np.ndarray | None = None, mono: bool = False) -> LivenessResult:
        """One frame: ``faces`` found; for the kept face its (468, ≥2) ``landmarks``,
        unit ``template``, ``texture`` real score and ``patch`` (cut at :attr:`ref_box`,
        which the caller sets from the first face frame); ``mono``: the face region has no
        colour (R = G = B), which only changes the hint of a texture failure. Returns
        :meth:`verdict`."""
        self.frames_read += 1
        self.max_faces = max(self.max_faces, int(faces))
        if faces and landmarks is not None:
            self.times.append(float(t))
            self.mono_frames += bool(mono)
            self.ears.append(eye_aspect_ratio(landmarks))
            if self.parallax_hold:
                lm = np.asarray(landmarks, np.float32)[:, :3]
                self.landmarks.append(np.pad(lm, ((0, 0), (0, 3 - lm.shape[1]))))  # (468, 2): z = 0
            if texture is not None:
                self.textures.append(float(texture))
            if patch is not None:
                self.meter.add(patch)
            if template is not None and self.identity_threshold > 0:
                tpl = np.asarray(template, np.float64)
                if self._ref_template is not None:  # against the previous face frame's
                    self.min_identity = min(self.min_identity, float(np.dot(tpl, self._ref_template)))
                self._ref_template = tpl
        return self.verdict()

    def _borderline_hold(self, score: float) -> str | None:
        """:func:`~faceunlock.liveness.tracks.borderline_hold` on the face frames so far, at
        their own frame rate; judged once per (frames, score)."""
        if not self.texture_threshold <= score < HOLD_BAND_HIGH:
            return None  # outside the band (most attempts): nothing to judge, nothing stacked
        key = (len(self.landmarks), score)
        if self._hold is None or self._hold[:2] != key:
            n = len(self.times)
            span = self.times[-1] - self.times[0] if n > 1 else 0.0
            fps = (n - 1) / span if span > 0 else 30.0
            tracks = np.stack(self.landmarks) if self.landmarks else np.zeros((0, 468, 3), np.float32)
            self._hold = (*key, borderline_hold(tracks, fps, score, self.texture_threshold))
        return self._hold[2]

    @property
    def attention_required(self) -> float:
        """The median EAR the attention rule needs now (:func:`attention_bar`)."""
        return attention_bar(self.attention_baseline, self.attention_min_ear, self.attention_ratio)

    @property
    def face_frames(self) -> int:
        return len(self.times)

    def cues(self) -> dict:
        tex = np.asarray(self.textures) if self.textures else None
        return {"texture": lower_median(tex) if tex is not None else None,
                "texture_min": float(tex.min()) if tex is not None else None,
                "change": self.meter.change, "eye_aspect": lower_median(self.ears) if self.ears else None,
                "eye_aspect_required": self.attention_required if self.require_attention else None,
                "identity_min_similarity": self.min_identity, "face_frames": self.face_frames,
                "frames_read": self.frames_read}

    def verdict(self) -> LivenessResult:
        """The verdict over the frames so far (``final`` when no later frame can change it)."""
        thr, n = self.texture_threshold, self.face_frames
        score = lower_median(self.textures) if self.textures else 0.0
        if self.max_faces > 1:
            return LivenessResult(False, 0.0, "more than one face in view", None, thr, self.cues(), n, True)
        if self.min_identity < self.identity_threshold:
            return LivenessResult(False, 0.0, "face changed during the check", None, thr, self.cues(), n, True)
        if n == 0:
            return LivenessResult(False, 0.0, "no face", None, thr, self.cues(), n)
        if n < self.min_frames:
            return LivenessResult(False, score, "too few frames with a face", None, thr, self.cues(), n)
        if self.meter.change < self.min_change:
            return LivenessResult(False, score, "frozen feed: the picture does not change", HINT_MOVE, thr,
                                  self.cues(), n)
        if self.texture and not score >= thr:  # NaN fails closed
            hint = HINT_COLOUR if 2 * self.mono_frames > n else HINT_FACE_CAMERA
            return LivenessResult(False, score, "texture: print or screen", hint, thr, self.cues(), n)
        hold = self._borderline_hold(score) if self.texture and self.parallax_hold else None
        if hold == "wait":
            return LivenessResult(False, score, "texture borderline: checking motion", HINT_HOLD, thr, self.cues(), n)
        if hold == "flat":
            return LivenessResult(False, score, "texture borderline and flat: moved like a sheet", HINT_FACE_CAMERA,
                                  thr, self.cues(), n)
        if self.require_attention and not lower_median(self.ears) >= self.attention_required:
            return LivenessResult(False, score, "eyes closed", HINT_OPEN_EYES, thr, self.cues(), n)
        return LivenessResult(True, score, "live", None, thr, self.cues(), n)
