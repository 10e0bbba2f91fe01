"""``faceunlock calibrate``: similarity thresholds from all pairs of labelled images.

Every image gets one template (largest face); every unordered pair of images is scored:
same identity → genuine, different → impostor. For each target false-accept rate the
threshold is the smallest one whose observed FAR is at or below the target, reported with
the genuine pairs it rejects (FRR) and a 95 % Clopper–Pearson upper bound on the FAR.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FaceUnlockError
from .dataset import LabelledImage, scan
from .metrics import clopper_pearson_upper, threshold_for_far

__all__ = ["TemplateSet", "compute_templates", "all_pair_scores", "calibrate", "CalibrationRow"]


@dataclass
class TemplateSet:
    identities: list[str]
    paths: list[Path]
    templates: np.ndarray  # (N, D) unit rows
    failures: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def compute_templates(engine, images: list[LabelledImage], pad: float = 0.0) -> TemplateSet:
    """Templates of the largest face of each image; images without a face are listed
    in ``failures``. ``pad`` adds a replicated border (fraction of the image size) first,
    for tight face crops such as ORL's."""
    import cv2

    from ..image import load_image

    t0 = time.perf_counter()
    ids, paths, temps, fails = [], [], [], []
    for item in images:
        img = load_image(item.path)
        if pad:
            p = int(max(img.shape[:2]) * pad)
            img = cv2.copyMakeBorder(img, p, p, p, p, cv2.BORDER_REPLICATE)
        try:
            t = engine.template(img)
        except FaceUnlockError:
            fails.append(item.path)
            continue
        ids.append(item.identity)
        paths.append(item.path)
        temps.append(t)
    arr = np.array(temps, np.float32) if temps else np.zeros((0, 0), np.float32)
    return TemplateSet(ids, paths, arr, fails, time.perf_counter() - t0)


def all_pair_scores(ts: TemplateSet) -> tuple[np.ndarray, np.ndarray]:
    """(genuine scores, impostor scores) over all unordered pairs."""
    sims = ts.templates @ ts.templates.T
    ids = np.array(ts.identities)
    iu = np.triu_indices(len(ids), k=1)
    same = ids[iu[0]] == ids[iu[1]]
    s = sims[iu]
    return s[same].astype(np.float64), s[~same].astype(np.float64)


@dataclass
class CalibrationRow:
    target_far: float
    threshold: float
    false_accepts: int
    impostor_pairs: int
    far_upper95: float
    frr: float
    false_rejects: int
    genuine_pairs: int

    def line(self) -> str:
        return (
            f"| 1/{round(1 / self.target_far):,} | {self.threshold:.4f} | {self.false_accepts} / {self.impostor_pairs:,} "
            f"(95 % upper bound {self.far_upper95:.1e}) | {self.frr * 100:.1f} % ({self.false_rejects} / {self.genuine_pairs:,}) |"
        )


def calibrate(genuine: np.ndarray, impostor: np.ndarray, targets=(1e-3, 2e-5)) -> list[CalibrationRow]:
    rows = []
    for far in targets:
        t = threshold_for_far(impostor, far)
        fa = int((impostor >= t).sum())
        fr = int((genuine < t).sum())
        rows.append(
            CalibrationRow(far, t, fa, int(impostor.size), clopper_pearson_upper(fa, int(impostor.size)),
                           fr / max(genuine.size, 1), fr, int(genuine.size))
        )
    return rows


def run(engine, roots: list[Path], exclude: tuple[str, ...] = (), pad: float = 0.0):
    images = scan(roots, exclude)
    ts = compute_templates(engine, images, pad)
    g, i = all_pair_scores(ts)
    return ts, g, i, calibrate(g, i)
