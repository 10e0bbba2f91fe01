"""``faceunlock eval-pairs``: verification accuracy on LFW-format pair lists.

Pair file: an optional header line (``10<TAB>300`` or ``1<TAB>140``: sets, pairs per class),
then ``Name<TAB>n1<TAB>n2`` (same person) and ``Name1<TAB>n1<TAB>Name2<TAB>n2`` (different
people) lines. Image n of ``Name`` is ``IMAGE_ROOT/Name/Name_%04d.jpg``.

Scoring: one template per image — the largest face by default (what
``FaceEngine.template`` takes), or the face nearest the image centre (``--face centre``;
LFW centres every image on the named person). An image in which a pipeline finds
no face is a *failure to acquire*; every pair that touches one gets the lowest possible
score, so it counts as rejected: a miss for a same-person pair, a correct rejection for a
different-person pair. Folds: pairs are split into 10 folds by position within each class
(the i-th same and i-th different pair fall in fold i mod 10); with the official 10-set
file this reproduces LFW's folds up to order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .metrics import VerificationReport, verification_report

__all__ = ["Pair", "read_pairs", "image_path", "score_pairs", "evaluate", "pick_face"]

FTA_SCORE = -1e9


@dataclass(frozen=True)
class Pair:
    a: tuple[str, int]
    b: tuple[str, int]
    same: bool


def read_pairs(path: str | Path) -> list[Pair]:
    """Parse an LFW-format pair file (both line forms). Raises ValueError on a bad line."""
    pairs = []
    lines = Path(path).read_text().splitlines()
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
            continue  # header
        if len(parts) == 3:
            pairs.append(Pair((parts[0], int(parts[1])), (parts[0], int(parts[2])), True))
        elif len(parts) == 4:
            pairs.append(Pair((parts[0], int(parts[1])), (parts[2], int(parts[3])), False))
        else:
            raise ValueError(f"{path}:{lineno}: expected 3 or 4 fields, got {len(parts)}")
    return pairs


def pick_face(boxes: list[tuple[float, float, float, float]], width: int, height: int, rule: str) -> int | None:
    """Index of the face a pair image stands for: ``"largest"`` (the library's rule) or
    ``"centre"`` (the face whose box centre is nearest the image centre — LFW crops every
    image around the named person, and a larger bystander would otherwise be scored)."""
    if not boxes:
        return None
    if rule == "largest":
        return max(range(len(boxes)), key=lambda i: (boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1]))
    if rule == "centre":
        cx, cy = (width - 1) / 2, (height - 1) / 2
        return min(range(len(boxes)), key=lambda i: ((boxes[i][0] + boxes[i][2]) / 2 - cx) ** 2
                   + ((boxes[i][1] + boxes[i][3]) / 2 - cy) ** 2)
    raise ValueError(f"unknown face rule {rule!r}: use 'largest' or 'centre'")


def image_path(root: Path, name: str, n: int) -> Path:
    return Path(root) / name / f"{name}_{n:04d}.jpg"


def folds_for(pairs: list[Pair], k: int = 10) -> np.ndarray:
    folds = np.zeros(len(pairs), int)
    counters = {True: 0, False: 0}
    for idx, p in enumerate(pairs):
        folds[idx] = counters[p.same] % k
        counters[p.same] += 1
    return folds


TemplateFn = Callable[[Path], "np.ndarray | None"]
ScoreFn = Callable[[np.ndarray, np.ndarray], float]


def score_pairs(
    pairs: list[Pair], root: Path, template_of: TemplateFn, score: ScoreFn
) -> tuple[np.ndarray, int, int]:
    """(scores, images failed to acquire, pairs touching them). Each image is processed once."""
    cache: dict[tuple[str, int], np.ndarray | None] = {}
    for p in pairs:
        for key in (p.a, p.b):
            if key not in cache:
                cache[key] = template_of(image_path(root, *key))
    scores = np.empty(len(pairs))
    fta_pairs = 0
    for idx, p in enumerate(pairs):
        ta, tb = cache[p.a], cache[p.b]
        if ta is None or tb is None:
            scores[idx] = FTA_SCORE
            fta_pairs += 1
        else:
            scores[idx] = score(ta, tb)
    failures = sum(v is None for v in cache.values())
    return scores, failures, fta_pairs


def evaluate(
    name: str, pairs: list[Pair], root: Path, template_of: TemplateFn, score: ScoreFn
) -> VerificationReport:
    t0 = time.perf_counter()
    scores, failures, fta = score_pairs(pairs, root, template_of, score)
    labels = np.array([p.same for p in pairs])
    return verification_report(
        name, scores, labels, folds_for(pairs), failures, fta, time.perf_counter() - t0
    )
