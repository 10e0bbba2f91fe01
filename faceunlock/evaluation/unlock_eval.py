"""``faceunlock eval-unlock``: false rejects and false accepts per unlock attempt.

For every identity with more than K images, the first K (sorted by file name) enrol it
through :meth:`FaceUnlock.enroll` (real quality gates, real template selection, a real
encrypted store in a temporary directory). Every remaining image of that identity is one
genuine attempt; every image of every other identity is one impostor attempt against it.
An attempt's score is :func:`~faceunlock.unlock.fused_score` of its template against the
user's templates — what :meth:`FaceUnlock.unlock` compares with the threshold on each frame.
Images without a face count as failed genuine attempts (they never unlock) and are
reported separately.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import EnrollmentError, FaceUnlockError
from ..image import load_image
from ..policy import Policy
from ..store import TemplateStore
from ..unlock import FaceUnlock, fused_score
from .dataset import LabelledImage, scan
from .metrics import clopper_pearson_upper

__all__ = ["UnlockEvaluation", "evaluate"]


@dataclass
class UnlockEvaluation:
    enroll_k: int
    threshold: float
    identities_enrolled: int
    enrol_failures: int
    genuine_attempts: int
    false_rejects: int
    genuine_no_face: int
    impostor_attempts: int
    false_accepts: int
    far_upper95: float
    seconds: float

    @property
    def frr(self) -> float:
        return self.false_rejects / max(self.genuine_attempts, 1)

    @property
    def far(self) -> float:
        return self.false_accepts / max(self.impostor_attempts, 1)

    def text(self) -> str:
        return (
            f"enrolled {self.identities_enrolled} identities with K={self.enroll_k} images each "
            f"({self.enrol_failures} could not be enrolled); threshold {self.threshold:.4f}\n"
            f"FRR per attempt: {self.frr * 100:.2f} % ({self.false_rejects} / {self.genuine_attempts}; "
            f"{self.genuine_no_face} of them without a detected face)\n"
            f"FAR per attempt: {self.far:.2e} ({self.false_accepts} / {self.impostor_attempts:,}; "
            f"95 % upper bound {self.far_upper95:.1e})\n"
            f"time {self.seconds:.1f} s"
        )

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(frr=self.frr, far=self.far)
        return d


def _pad(img: np.ndarray, pad: float) -> np.ndarray:
    if not pad:
        return img
    import cv2

    p = int(max(img.shape[:2]) * pad)
    return cv2.copyMakeBorder(img, p, p, p, p, cv2.BORDER_REPLICATE)


def evaluate(
    engine, roots: list[Path], *, enroll_k: int = 3, policy: Policy | None = None,
    exclude: tuple[str, ...] = (), pad: float = 0.3,
) -> UnlockEvaluation:
    t0 = time.perf_counter()
    images = scan(roots, exclude)
    by_id: dict[str, list[LabelledImage]] = {}
    for item in images:
        by_id.setdefault(item.identity, []).append(item)
    policy = policy or Policy(enroll_min_templates=enroll_k, enroll_max_templates=max(enroll_k, 5),
                              min_face_px=40, lockout_after=10**9, permanent_after=None)
    frames = {item.path: _pad(load_image(item.path), pad) for item in images}
    templates: dict[Path, np.ndarray | None] = {}
    for item in images:
        try:
            templates[item.path] = engine.template(frames[item.path])
        except FaceUnlockError:
            templates[item.path] = None
    with tempfile.TemporaryDirectory() as tmp:
        store = TemplateStore(Path(tmp) / "eval.fus", key=os.urandom(32))
        fu = FaceUnlock(store, engine=engine, policy=policy)
        threshold = fu.threshold
        galleries: dict[str, np.ndarray] = {}
        enrol_fail = 0
        for ident, items in by_id.items():
            if len(items) <= enroll_k:
                continue
            try:
                fu.enroll(ident, [frames[i.path] for i in items[:enroll_k]])
            except EnrollmentError:
                enrol_fail += 1
                continue
            galleries[ident] = store.get(ident).templates
    gen = fr = nf = imp = fa = 0
    for ident, gallery in galleries.items():
        for item in by_id[ident][enroll_k:]:
            gen += 1
            t = templates[item.path]
            if t is None:
                fr += 1
                nf += 1
            elif fused_score(gallery, t)[0] < threshold:
                fr += 1
        for other, items in by_id.items():
            if other == ident:
                continue
            for item in items:
                t = templates[item.path]
                if t is None:
                    continue
                imp += 1
                fa += fused_score(gallery, t)[0] >= threshold
    return UnlockEvaluation(enroll_k, threshold, len(galleries), enrol_fail, gen, fr, nf, imp, fa,
                            clopper_pearson_upper(fa, imp), time.perf_counter() - t0)
