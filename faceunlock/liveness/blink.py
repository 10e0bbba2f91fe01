"""Blinks from face-mesh eyelid landmarks: eye aspect ratio (EAR) over time.

EAR (Soukupová & Čech 2016) of one eye = (|p2−p6| + |p3−p5|) / (2 |p1−p4|) with p1, p4 the
eye corners and p2/p6, p3/p5 upper/lower lid points: ≈ 0.25–0.35 open, ≲ 0.15 closed, and
nearly independent of scale and in-plane rotation. A blink lasts 100–400 ms, so at 10 fps it
may cover a single frame: the detector looks for a dip of the mean EAR of both eyes below
``CLOSED_RATIO`` × the open-eye baseline (a running high quantile) that recovers above
``OPEN_RATIO`` × baseline within ``MAX_BLINK_S``. Pure numpy; times in seconds.

:func:`open_eye_ear` is the per-user open-eye level that enrolment stores (the median EAR of
the enrolment frames) and that the attention rule (:mod:`faceunlock.liveness.passive`)
compares an attempt with; :func:`blink_troughs` gives the deepest frame of each blink (the
closed-eye frames that docs/LIVENESS.md measures the rule on).
"""

from __future__ import annotations

import numpy as np

__all__ = ["RIGHT_EYE", "LEFT_EYE", "eye_aspect_ratio", "open_eye_ear", "BlinkDetector", "count_blinks",
           "blink_troughs"]

# p1..p6 per eye in face-mesh indices (subject's right eye = image left for a raw camera).
RIGHT_EYE = (33, 160, 158, 133, 153, 144)
LEFT_EYE = (362, 385, 387, 263, 373, 380)
CLOSED_RATIO = 0.82
OPEN_RATIO = 0.92
MAX_BLINK_S = 0.6
BASELINE_S = 1.5


def _ear(p: np.ndarray, idx: tuple[int, ...]) -> float:
    p1, p2, p3, p4, p5, p6 = (p[i, :2] for i in idx)
    width = float(np.linalg.norm(p1 - p4))
    if width < 1e-6:
        return 0.0
    return float((np.linalg.norm(p2 - p6) + np.linalg.norm(p3 - p5)) / (2 * width))


def eye_aspect_ratio(landmarks: np.ndarray) -> float:
    """Mean EAR of both eyes of one (468, 2 or 3) landmark set."""
    p = np.asarray(landmarks, np.float64)
    return 0.5 * (_ear(p, RIGHT_EYE) + _ear(p, LEFT_EYE))


def open_eye_ear(ears) -> float | None:
    """A person's open-eye EAR from a series of their frames (e.g. enrolment's): the median
    of the finite, positive values — robust to the few blink frames a few seconds hold.
    None when no value is usable."""
    v = np.asarray([float(e) for e in ears], np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    return float(np.median(v)) if v.size else None


class BlinkDetector:
    """Streaming blink detector: feed (time_s, landmarks) or (time_s, ear); read ``blinks``.

    ``blinks`` counts completed blinks (closing and reopening within ``MAX_BLINK_S``).
    """

    def __init__(self) -> None:
        self._hist: list[tuple[float, float]] = []
        self._closed_at: float | None = None
        self.blinks = 0
        self.blink_times: list[float] = []
        #: (time_s, EAR) of the deepest frame of each completed blink
        self.troughs: list[tuple[float, float]] = []
        self._trough: tuple[float, float] | None = None

    def baseline(self, now: float) -> float | None:
        """Open-eye EAR: the 80th percentile over the last ``BASELINE_S`` seconds."""
        vals = [e for t, e in self._hist if now - t <= BASELINE_S]
        if len(vals) < 3:
            return None
        return float(np.quantile(vals, 0.8))

    def feed(self, t: float, landmarks_or_ear) -> bool:
        """Add one observation; True when it completes a blink."""
        ear = float(landmarks_or_ear) if np.ndim(landmarks_or_ear) == 0 else eye_aspect_ratio(landmarks_or_ear)
        base = self.baseline(t)
        self._hist.append((t, ear))
        self._hist = [(s, e) for s, e in self._hist if t - s <= 2 * BASELINE_S]
        if base is None or base <= 0:
            return False
        if self._closed_at is None:
            if ear < CLOSED_RATIO * base:
                self._closed_at = t
                self._trough = (t, ear)
            return False
        if self._trough is not None and ear < self._trough[1]:
            self._trough = (t, ear)
        if t - self._closed_at > MAX_BLINK_S:  # eyes closed too long: not a blink
            if ear >= OPEN_RATIO * base:
                self._closed_at = None
            return False
        if ear >= OPEN_RATIO * base:
            self._closed_at = None
            self.blinks += 1
            self.blink_times.append(t)
            if self._trough is not None:
                self.troughs.append(self._trough)
            return True
        return False


def count_blinks(times_s, ears) -> list[float]:
    """Times (s) of the blinks in an EAR series sampled at ``times_s``."""
    d = BlinkDetector()
    for t, e in zip(times_s, ears):
        d.feed(float(t), float(e))
    return d.blink_times


def blink_troughs(times_s, ears) -> list[tuple[float, float]]:
    """(time_s, EAR) of the deepest frame of each blink in an EAR series sampled at ``times_s``
    (the :class:`BlinkDetector`'s blinks: a dip below ``CLOSED_RATIO`` × the running open-eye
    level that reopens within ``MAX_BLINK_S``)."""
    d = BlinkDetector()
    for t, e in zip(times_s, ears):
        d.feed(float(t), float(e))
    return d.troughs
