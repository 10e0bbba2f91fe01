"""Verification metrics over similarity scores (higher = more alike). Pure numpy."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "roc_auc",
    "eer",
    "tar_at_far",
    "kfold_accuracy",
    "threshold_for_far",
    "clopper_pearson_upper",
    "VerificationReport",
    "verification_report",
]


def roc_auc(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Area under the ROC curve: P(genuine score > impostor score), ties counted half."""
    g = np.asarray(genuine, float)
    i = np.sort(np.asarray(impostor, float))
    if g.size == 0 or i.size == 0:
        return float("nan")
    below = np.searchsorted(i, g, side="left")
    ties = np.searchsorted(i, g, side="right") - below
    return float((below + 0.5 * ties).sum() / (g.size * i.size))


def _far_frr(genuine: np.ndarray, impostor: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    g = np.sort(np.asarray(genuine, float))
    i = np.sort(np.asarray(impostor, float))
    # accept iff score >= t
    far = 1.0 - np.searchsorted(i, thresholds, side="left") / max(i.size, 1)
    frr = np.searchsorted(g, thresholds, side="left") / max(g.size, 1)
    return far, frr


def eer(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """(equal error rate, threshold at it), taking the candidate threshold where
    |FAR − FRR| is smallest and reporting their mean there."""
    t = np.unique(np.concatenate([genuine, impostor]))
    t = np.concatenate([t, [np.inf]])
    far, frr = _far_frr(genuine, impostor, t)
    k = int(np.argmin(np.abs(far - frr)))
    return float((far[k] + frr[k]) / 2), float(t[k])


def threshold_for_far(impostor: np.ndarray, max_far: float) -> float:
    """Smallest threshold (accept iff score >= threshold) whose observed false-accept rate
    on ``impostor`` is ≤ ``max_far``. It sits just above the highest impostor score that
    must be rejected, so it is never equal to an observed score."""
    i = np.sort(np.asarray(impostor, float))[::-1]
    allowed = int(math.floor(max_far * i.size + 1e-9))
    if allowed >= i.size:
        return float("-inf")
    return float(np.nextafter(i[allowed], np.inf))


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> tuple[float, float]:
    """(true accept rate, threshold) at the threshold :func:`threshold_for_far` picks."""
    t = threshold_for_far(impostor, far)
    g = np.asarray(genuine, float)
    return float((g >= t).mean()) if g.size else float("nan"), t


def kfold_accuracy(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> tuple[float, float, list[float]]:
    """LFW protocol: for each fold, the accuracy-maximising threshold on the other folds is
    applied to it. Returns (mean, standard deviation, per-fold accuracies)."""
    scores = np.asarray(scores, float)
    labels = np.asarray(labels, bool)
    accs = []
    for f in np.unique(folds):
        train, test = folds != f, folds == f
        cands = np.unique(scores[train])
        cands = np.concatenate([[-np.inf], (cands[:-1] + cands[1:]) / 2, [np.inf]]) if cands.size > 1 else np.array([0.0])
        acc_train = [((scores[train] >= t) == labels[train]).mean() for t in cands]
        best = cands[int(np.argmax(acc_train))]
        accs.append(float(((scores[test] >= best) == labels[test]).mean()))
    return float(np.mean(accs)), float(np.std(accs)), accs


def clopper_pearson_upper(errors: int, trials: int, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound on an error rate from ``errors`` in ``trials``."""
    if trials <= 0:
        return float("nan")
    if errors >= trials:
        return 1.0
    alpha = 1 - confidence
    lo, hi = errors / trials, 1.0
    for _ in range(100):  # bisection on the binomial CDF
        mid = (lo + hi) / 2
        if _binom_cdf(errors, trials, mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


def upper95(errors: int, trials: int) -> float:
    """95 % one-sided upper bound of an error rate: 3/n for 0 errors (rule of three,
    capped at 1 for n < 3), else Clopper–Pearson; NaN for no trials."""
    if trials <= 0:
        return float("nan")
    return min(1.0, 3.0 / trials) if errors == 0 else clopper_pearson_upper(errors, trials)


def _binom_cdf(k: int, n: int, p: float) -> float:
    if p <= 0:
        return 1.0
    if p >= 1:
        return 0.0 if k < n else 1.0
    logp, logq = math.log(p), math.log1p(-p)
    total = 0.0
    for j in range(k + 1):
        total += math.exp(math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * logp + (n - j) * logq)
    return min(1.0, total)


@dataclass
class VerificationReport:
    """Metrics of one pipeline on one pair list."""

    pipeline: str
    pairs: int
    genuine: int
    impostor: int
    failures_to_acquire: int  # images without a usable face
    fta_pairs: int  # pairs touching such an image (scored as rejected)
    accuracy: float
    accuracy_std: float
    auc: float
    eer: float
    tar_at_far_1e3: float
    seconds: float

    def row(self) -> str:
        return (
            f"| {self.pipeline} | {self.accuracy * 100:.2f} ± {self.accuracy_std * 100:.2f} % | "
            f"{self.auc:.4f} | {self.eer * 100:.2f} % | {self.tar_at_far_1e3 * 100:.1f} % | "
            f"{self.failures_to_acquire} images / {self.fta_pairs} pairs | {self.seconds:.1f} s |"
        )

    @staticmethod
    def header() -> str:
        return (
            "| pipeline | 10-fold accuracy | ROC AUC | EER | TAR @ FAR 1e-3 | failed to acquire | time |\n"
            "|---|---|---|---|---|---|---|"
        )


def verification_report(
    pipeline: str, scores: np.ndarray, labels: np.ndarray, folds: np.ndarray,
    failures: int, fta_pairs: int, seconds: float,
) -> VerificationReport:
    scores = np.asarray(scores, float)
    labels = np.asarray(labels, bool)
    g, i = scores[labels], scores[~labels]
    acc, std, _ = kfold_accuracy(scores, labels, folds)
    return VerificationReport(
        pipeline=pipeline, pairs=int(scores.size), genuine=int(g.size), impostor=int(i.size),
        failures_to_acquire=failures, fta_pairs=fta_pairs, accuracy=acc, accuracy_std=std,
        auc=roc_auc(g, i), eer=eer(g, i)[0], tar_at_far_1e3=tar_at_far(g, i, 1e-3)[0], seconds=seconds,
    )
