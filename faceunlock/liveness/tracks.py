"""Passive 3D check: does the nose move like a point in front of a plane?

Pure numpy over landmark tracks — (T, 468, 3) face-mesh landmarks, x and y in pixels,
z the mesh's relative depth in pixels — so it is testable without any video or model.

The verdict uses only 2-D positions of landmarks tied to visible image features (the
face mesh regresses its contour and depth with a learnt 3D prior and, on a tilted photo,
"hallucinates" 3D-looking motion; the 2-D positions of eye corners, brows, mouth corners
and the nose are much closer to what the image shows). For every pair of frames (i, j) of
the smoothed, subsampled track (:func:`parallax_ratio_pairs`):

* **nose parallax** — an affine map is fitted to the eye corners, brows and mouth corners
  (:data:`FEATURE_BASE`) from i to j; the nose landmarks (:data:`PROTRUDING`: tip, ridge,
  alar wings, subnasale) land off that map by ≈ 0.5 IOD × the head's rotation (rad) on a
  real head, and by landmark noise only on a sheet (print, screen);
* **foreshortening** — log of the singular-value ratio of the affine map of the eye corners
  and brows (:data:`SHAPE_LANDMARKS`): a sheet must turn a lot (10–25°) to look 3-D to a
  camera and is then visibly squashed; a head turning a few degrees is barely squashed.

Score = median over pairs of nose parallax / (foreshortening + :data:`FORESHORTENING_EPS`)
— a slope test: parallax per unit of apparent rotation; live when ≥
:data:`PARALLAX_THRESHOLD`. "Too little motion" when the median nose parallax is below
:data:`MIN_NOSE_SHIFT` IOD (or, if enabled, the mesh's rotation range is below
``min_motion_deg``).

Smoothing (a moving average over ``SMOOTH_S`` seconds) removes most of the frame-to-frame
landmark jitter. The older cues are still reported: ``mesh_parallax`` (homography of 28
mesh landmarks around the nose, 0.9 quantile over pairs; fooled by tilted photos) and
``motion_deg`` (the head's rotation range as the mesh sees it, Kabsch fit of rigid
landmarks). The ``rigid_gain`` cue of 0.1.0 (a full SVD of a 114×9 system per frame, which
never decided) is gone.

This is the **0.1.0 passive check**: since 0.2 the verdict of :class:`faceunlock.Liveness`
comes from image texture and frame-to-frame change (``faceunlock.liveness.passive``); this
module is kept as a reported cue and for the comparison in ``faceunlock eval-liveness``.
Batched small-matrix products use :func:`numpy.einsum` (no BLAS call, so no BLAS thread
start-up on every frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "RIGID_LANDMARKS",
    "PARALLAX_THRESHOLD",
    "MIN_MOTION_DEG",
    "TrackScore",
    "fit_homography",
    "homography_residual",
    "rigid_residual",
    "rotation_angles_deg",
    "smooth_tracks",
    "nose_parallax",
    "nose_parallax_pairs",
    "parallax_ratio_pairs",
    "MIN_NOSE_SHIFT",
    "HOLD_BAND_HIGH",
    "HOLD_MIN_S",
    "borderline_hold",
    "fit_homographies",
    "score_tracks",
    "LivenessResult",
    "judge",
    "HINT_TURN_HEAD",
]

# Face-mesh indices that move rigidly with the skull (mostly): nose ridge and tip, nostril
# wings, inner and outer eye corners, brows, forehead, cheekbones, temples and ears' front.
RIGID_LANDMARKS = np.array(
    [1, 4, 5, 6, 195, 197, 168, 8, 9, 151, 10,  # midline: tip → forehead
     98, 327, 2, 94, 64, 294,  # nostrils
     33, 133, 362, 263, 130, 359, 243, 463,  # eye corners
     70, 63, 105, 66, 107, 336, 296, 334, 293, 300,  # brows
     50, 280, 101, 330, 117, 346, 118, 347, 123, 352,  # cheeks
     234, 454, 127, 356, 93, 323, 21, 251, 54, 284, 103, 332,  # face sides, temples, forehead sides
     ],
    dtype=np.int64,
)
EYE_CORNERS = (33, 263)  # outer corners, image-left then image-right
# Landmarks around the nose that the homography is fitted to, and the nose landmarks tested.
BASE_LANDMARKS = np.array(
    [33, 133, 362, 263, 130, 359, 70, 300, 105, 334, 10, 151, 109, 338, 50, 280, 117, 346,
     234, 454, 127, 356, 205, 425, 36, 266, 187, 411], dtype=np.int64)
NOSE_LANDMARKS = np.array([1, 4, 5, 195], dtype=np.int64)
# 2-D test (the verdict): landmarks tied to visible image features only.
FEATURE_BASE = np.array([33, 133, 362, 263,  # eye corners
                         70, 105, 107, 336, 334, 300,  # brows
                         61, 291], dtype=np.int64)  # mouth corners
SHAPE_LANDMARKS = np.array([33, 133, 362, 263, 70, 105, 107, 336, 334, 300], dtype=np.int64)
PROTRUDING = np.array([1, 4, 98, 327, 2], dtype=np.int64)  # nose tip, ridge, alar wings, subnasale
FORESHORTENING_EPS = 0.01
PARALLAX_THRESHOLD = 0.46  # parallax per foreshortening; chosen on the tuning split, docs/LIVENESS.md
MIN_NOSE_SHIFT = 0.0075  # IOD: median 2-D nose parallax below this = "too little motion"
MIN_MOTION_DEG = 0.0  # optional extra gate on the mesh's 3-D rotation range (off by default)
SCORE_QUANTILE = 0.9
HOLD_BAND_HIGH = 0.55  # texture real score below which a live texture verdict also needs "not flat" (tuning half)
HOLD_MIN_S = 2.0  # seconds of face frames before the parallax cue may clear a borderline texture score
SMOOTH_S = 0.17
MAX_SCORED_FRAMES = 24


@dataclass(frozen=True)
class TrackScore:
    """Passive-check numbers of one landmark track.

    parallax: the score — median over frame pairs of 2-D nose parallax ÷ (foreshortening +
    :data:`FORESHORTENING_EPS`), larger = more 3D (see :func:`parallax_ratio_pairs`);
    nose_shift: median 2-D nose parallax over pairs (IOD); foreshortening: 0.9 quantile of
    the pairs' foreshortening; mesh_parallax: the older homography nose parallax (0.9
    quantile, IOD; a cue only); motion_deg: the head's rotation range as the mesh sees it (max of yaw and pitch ranges,
    degrees); frames: frames scored (after smoothing and subsampling).
    """

    parallax: float
    motion_deg: float
    frames: int
    nose_shift: float = 0.0
    foreshortening: float = 0.0
    mesh_parallax: float = 0.0


def _normalise(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = p.mean(0)
    d = np.sqrt(((p - c) ** 2).sum(1)).mean() + 1e-12
    s = math.sqrt(2) / d
    t = np.array([[s, 0, -s * c[0]], [0, s, -s * c[1]], [0, 0, 1]])
    ph = np.c_[p, np.ones(len(p))] @ t.T
    return ph, t


def fit_homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares homography (normalised DLT) mapping (N, 2) ``src`` to ``dst``; N ≥ 4."""
    a, ta = _normalise(np.asarray(src, np.float64))
    b, tb = _normalise(np.asarray(dst, np.float64))
    rows = []
    for (x, y, _), (u, v, _) in zip(a, b):
        rows.append([-x, -y, -1, 0, 0, 0, u * x, u * y, u])
        rows.append([0, 0, 0, -x, -y, -1, v * x, v * y, v])
    _, _, vt = np.linalg.svd(np.asarray(rows))
    h = vt[-1].reshape(3, 3)
    h = np.linalg.inv(tb) @ h @ ta
    return h / (h[2, 2] if abs(h[2, 2]) > 1e-12 else 1.0)


def _apply_h(h: np.ndarray, p: np.ndarray) -> np.ndarray:
    q = np.c_[p, np.ones(len(p))] @ h.T
    return q[:, :2] / q[:, 2:3]


def homography_residual(src: np.ndarray, dst: np.ndarray) -> float:
    """RMS distance (pixels) between ``dst`` and the best homography of ``src`` (N, 2)."""
    h = fit_homography(src, dst)
    return float(np.sqrt(((_apply_h(h, src) - dst) ** 2).sum(1).mean()))


def rigid_residual(shape3d: np.ndarray, dst: np.ndarray) -> float:
    """RMS distance (pixels) between ``dst`` (N, 2) and the best affine camera of the 3D
    points ``shape3d`` (N, 3): dst ≈ shape3d @ A.T + b with A 2×3 (8 parameters)."""
    s = np.asarray(shape3d, np.float64)
    s = s - s.mean(0)
    x = np.c_[s, np.ones(len(s))]
    coef, *_ = np.linalg.lstsq(x, dst, rcond=None)
    return float(np.sqrt(((x @ coef - dst) ** 2).sum(1).mean()))


def rotation_angles_deg(ref3d: np.ndarray, cur3d: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) in degrees of the rotation taking (N, 3) points ``ref3d`` to ``cur3d``
    (Kabsch, after removing the centroids; scale-free)."""
    a = ref3d - ref3d.mean(0)
    b = cur3d - cur3d.mean(0)
    u, _, vt = np.linalg.svd(np.einsum("ni,nj->ij", a, b))  # 3×3: no BLAS call on the N-point product
    d = np.sign(np.linalg.det(np.einsum("ij,jk->ik", u, vt))) or 1.0
    r = np.einsum("ij,j,jk->ik", u, np.array([1.0, 1.0, d]), vt).T
    return math.degrees(math.asin(float(np.clip(-r[0, 2], -1, 1)))), math.degrees(math.asin(float(np.clip(r[1, 2], -1, 1))))


def smooth_tracks(tracks: np.ndarray, window: int) -> np.ndarray:
    """Moving average over ``window`` frames (valid part only: T − window + 1 frames)."""
    if window <= 1 or len(tracks) <= window:
        return tracks
    c = np.cumsum(np.concatenate([np.zeros((1,) + tracks.shape[1:]), tracks]), axis=0)
    return (c[window:] - c[:-window]) / window


def _normalise_batch(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hartley normalisation of (P, N, 2) point sets: (P, N, 2) points and (P, 3, 3) T."""
    c = p.mean(1, keepdims=True)
    d = np.sqrt(((p - c) ** 2).sum(2)).mean(1) + 1e-12
    s = math.sqrt(2) / d
    t = np.zeros((len(p), 3, 3))
    t[:, 0, 0] = t[:, 1, 1] = s
    t[:, 0, 2] = -s * c[:, 0, 0]
    t[:, 1, 2] = -s * c[:, 0, 1]
    t[:, 2, 2] = 1
    return (p - c) * s[:, None, None], t


def fit_homographies(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Batched least-squares homographies (normalised DLT): (P, N, 2) → (P, 3, 3)."""
    a, ta = _normalise_batch(np.asarray(src, np.float64))
    b, tb = _normalise_batch(np.asarray(dst, np.float64))
    x, y, u, v = a[..., 0], a[..., 1], b[..., 0], b[..., 1]
    o, z = np.ones_like(x), np.zeros_like(x)
    r1 = np.stack([-x, -y, -o, z, z, z, u * x, u * y, u], -1)
    r2 = np.stack([z, z, z, -x, -y, -o, v * x, v * y, v], -1)
    m = np.concatenate([r1, r2], 1)
    _, _, vt = np.linalg.svd(m)
    h = vt[:, -1].reshape(-1, 3, 3)
    h = np.einsum("pij,pjk,pkl->pil", np.linalg.inv(tb), h, ta)
    return h / h[:, 2:3, 2:3]


def nose_parallax_pairs(tracks: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Nose parallax (IOD units) for each (i, j) in ``pairs`` of a (T, 468, ≥2) track: the
    mean displacement of the nose landmarks in frame j from where the homography of the
    base landmarks i → j puts them."""
    i, j = pairs[:, 0], pairs[:, 1]
    h = fit_homographies(tracks[i][:, BASE_LANDMARKS, :2], tracks[j][:, BASE_LANDMARKS, :2])
    n = tracks[i][:, NOSE_LANDMARKS, :2]
    q = np.einsum("pnk,pjk->pnj", np.concatenate([n, np.ones(n.shape[:2] + (1,))], 2), h)
    pred = q[..., :2] / q[..., 2:3]
    r = (tracks[j][:, NOSE_LANDMARKS, :2] - pred).mean(1)
    iod = np.linalg.norm(tracks[j][:, EYE_CORNERS[0], :2] - tracks[j][:, EYE_CORNERS[1], :2], axis=1)
    return np.linalg.norm(r, axis=1) / np.maximum(iod, 1e-9)


def _affines(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Batched least-squares affine maps (P, N, 2) → (P, N, 2): (P, 3, 2) with
    dst ≈ [src, 1] @ A."""
    x = np.concatenate([src, np.ones(src.shape[:2] + (1,))], 2)
    return np.linalg.solve(np.einsum("pnk,pnj->pkj", x, x) + 1e-9 * np.eye(3), np.einsum("pnk,pnj->pkj", x, dst))


def _singular_values_2x2(m: np.ndarray) -> np.ndarray:
    """Singular values (P, 2), largest first, of (P, 2, 2) matrices in closed form."""
    a, b, c, d = m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1]
    s1 = np.hypot(a + d, c - b)
    s2 = np.hypot(a - d, c + b)
    return np.stack([(s1 + s2) / 2, np.abs(s1 - s2) / 2], 1)


def parallax_ratio_pairs(tracks: np.ndarray, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nose parallax in IOD, foreshortening) for each (i, j) of ``pairs`` of a (T, 468, ≥2)
    track, from 2-D positions of landmarks tied to visible features only.

    Nose parallax: an affine map is fitted to :data:`FEATURE_BASE` (eye corners, brows,
    mouth corners) i → j; the mean displacement of :data:`PROTRUDING` (nose tip, ridge,
    nostrils) in j from where that map puts them, over the inter-ocular distance.
    Foreshortening: log of the ratio of the singular values of the affine map of
    :data:`SHAPE_LANDMARKS` (eye corners, brows) i → j — how much the face's flat part was
    squashed in one direction relative to the other. A sheet (print, screen) that turns
    foreshortens a lot but has no nose parallax; a head that turns a few degrees barely
    foreshortens its eye/brow area, yet its nose moves about 0.5 IOD × the angle (rad)."""
    i, j = pairs[:, 0], pairs[:, 1]
    a = _affines(tracks[i][:, FEATURE_BASE, :2], tracks[j][:, FEATURE_BASE, :2])
    n = tracks[i][:, PROTRUDING, :2]
    pred = np.einsum("pnk,pkj->pnj", np.concatenate([n, np.ones(n.shape[:2] + (1,))], 2), a)
    r = (tracks[j][:, PROTRUDING, :2] - pred).mean(1)
    iod = np.linalg.norm(tracks[j][:, EYE_CORNERS[0], :2] - tracks[j][:, EYE_CORNERS[1], :2], axis=1)
    shift = np.linalg.norm(r, axis=1) / np.maximum(iod, 1e-9)
    b = _affines(tracks[i][:, SHAPE_LANDMARKS, :2], tracks[j][:, SHAPE_LANDMARKS, :2])
    sv = _singular_values_2x2(b[:, :2, :])
    fore = np.log(np.maximum(sv[:, 0], 1e-12) / np.maximum(sv[:, 1], 1e-12))
    return shift, fore


def nose_parallax(a: np.ndarray, b: np.ndarray) -> float:
    """Nose parallax (IOD units) between two (468, ≥2) landmark sets (see
    :func:`nose_parallax_pairs`)."""
    return float(nose_parallax_pairs(np.stack([a[:, :2], b[:, :2]]), np.array([[0, 1]]))[0])


def score_tracks(tracks: np.ndarray, fps: float = 30.0) -> TrackScore:
    """Score a (T, 468, 3) landmark track sampled at ``fps`` (frames without a face
    removed; T ≥ 2). The caller compares ``parallax`` with :data:`PARALLAX_THRESHOLD` and
    ``motion_deg`` with :data:`MIN_MOTION_DEG` (see :func:`judge`).
    """
    tr = np.asarray(tracks, np.float64)
    if tr.ndim != 3 or tr.shape[0] < 2 or tr.shape[1] != 468 or tr.shape[2] != 3:
        raise ValueError(f"tracks must be (T >= 2, 468, 3), got {tr.shape}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    tr = smooth_tracks(tr, max(1, round(SMOOTH_S * fps)))
    step = max(1, math.ceil(len(tr) / MAX_SCORED_FRAMES))
    tr = tr[::step]
    rigid = tr[:, RIGID_LANDMARKS]
    angles = np.array([rotation_angles_deg(rigid[0], f) for f in rigid])
    motion = float(np.ptp(angles, axis=0).max()) if len(tr) > 1 else 0.0
    pairs = np.array([(i, j) for i in range(len(tr)) for j in range(i + 1, len(tr))], np.int64).reshape(-1, 2)
    pars = nose_parallax_pairs(tr, pairs) if len(pairs) else np.zeros(0)
    mesh_parallax = float(np.quantile(pars, SCORE_QUANTILE)) if len(pars) else 0.0
    if len(pairs):
        shift, fore = parallax_ratio_pairs(tr, pairs)
        parallax = float(np.median(shift / (fore + FORESHORTENING_EPS)))
        nose_shift, foreshortening = float(np.median(shift)), float(np.quantile(fore, SCORE_QUANTILE))
    else:
        parallax = nose_shift = foreshortening = 0.0
    return TrackScore(parallax, motion, len(tr), nose_shift, foreshortening, mesh_parallax)


HINT_TURN_HEAD = "turn your head slightly"


@dataclass(frozen=True)
class LivenessResult:
    """Verdict of a liveness check.

    live: accepted as a live person. score: the deciding score (for :class:`faceunlock.Liveness`:
    the median MiniFASNet real score 0..1 of the face frames; for :func:`judge`: 2-D nose
    parallax per foreshortening, dimensionless); compare with ``threshold``. reason: one line
    saying why (``"live"``, ``"texture: print or screen"``, ``"frozen feed: the picture does
    not change"``, ``"eyes closed"``, ``"flat: no parallax"``, ``"too little motion"``,
    ``"no face"``, ``"face changed during the check"``, ...). hint: what a UI should ask the
    user to do, or None. cues: per-cue numbers (see the producer's docstring).
    frames: frames with a face that were scored. final: no further frame can change the
    verdict (a second face, a change of identity); a non-final rejection may turn live as
    more frames arrive.
    """

    live: bool
    score: float
    reason: str
    hint: str | None = None
    threshold: float = PARALLAX_THRESHOLD
    cues: dict = field(default_factory=dict)
    frames: int = 0
    final: bool = False


def judge(tracks: np.ndarray, fps: float = 30.0, *, threshold: float = PARALLAX_THRESHOLD,
          min_motion_deg: float = MIN_MOTION_DEG, min_frames: int = 8,
          min_nose_shift: float = MIN_NOSE_SHIFT) -> LivenessResult:
    """The passive verdict for a (T, 468, 3) landmark track sampled at ``fps``: live when
    the parallax ratio reaches ``threshold``; "too little motion" when the median 2-D nose
    parallax is below ``min_nose_shift`` (IOD) or the mesh's rotation range below
    ``min_motion_deg``; otherwise "flat: no parallax"."""
    tr = np.asarray(tracks, np.float64)
    if tr.ndim != 3 or len(tr) < min_frames:
        return LivenessResult(False, 0.0, "too few frames with a face", HINT_TURN_HEAD, threshold,
                              {}, int(len(tr)) if tr.ndim == 3 else 0)
    sc = score_tracks(tr, fps)
    cues = {"parallax": sc.parallax, "nose_shift": sc.nose_shift, "foreshortening": sc.foreshortening,
            "mesh_parallax": sc.mesh_parallax, "motion_deg": sc.motion_deg}
    little = sc.motion_deg < min_motion_deg or sc.nose_shift < min_nose_shift
    if sc.parallax >= threshold and not little:
        return LivenessResult(True, sc.parallax, "3D motion", None, threshold, cues, len(tr))
    if little:
        return LivenessResult(False, sc.parallax, "too little motion", HINT_TURN_HEAD, threshold, cues, len(tr))
    # a real head that turned too little also lands here: the hint helps it, and tells an
    # attacker nothing new
    return LivenessResult(False, sc.parallax, "flat: no parallax", HINT_TURN_HEAD, threshold, cues, len(tr))


def borderline_hold(tracks: np.ndarray, fps: float, texture_score: float, texture_threshold: float, *,
                    band_high: float = HOLD_BAND_HIGH, min_s: float = HOLD_MIN_S,
                    threshold: float = PARALLAX_THRESHOLD) -> str | None:
    """The parallax cue as a *hold* on borderline texture verdicts (evaluated in
    ``faceunlock eval-liveness``; shipped in :class:`~faceunlock.liveness.passive.PassiveSession`).

    For a texture real score (0..1) in ``[texture_threshold, band_high)`` that would make an
    attempt live, returns ``"wait"`` while fewer than ``min_s`` × ``fps`` face frames
    (``tracks``: (T, 468, 3) landmarks, pixels) have been seen, ``"flat"`` when the 0.1.0
    judge then finds enough motion but no parallax (a sheet moved in 3D), else None. None
    also for scores outside the band. "Too little motion" never holds: a still live user is
    at most delayed to ``min_s``, never rejected by this cue."""
    if not texture_threshold <= texture_score < band_high:
        return None
    tr = np.asarray(tracks, np.float64)
    if not len(tr) >= min_s * fps:  # an infinite or NaN fps waits (fails closed), never raises
        return "wait"
    return "flat" if judge(tr, fps, threshold=threshold).reason.startswith("flat") else None
