"""Decisions over frames, and templates that follow their owner.

An unlock attempt reads many frames. Granting on the first frame whose score reaches the
threshold lets one lucky frame of a lookalike in; :class:`FrameDecision` instead grants
only when ``k`` of the last ``n`` face frames reach it (for the same user, when several
users are matched at once). :func:`adapt_gallery` decides whether the template of a
confidently granted frame may replace the least useful stored template.

Scores are cosine similarities of unit-norm templates (``faceunlock.unlock.fused_score``),
in [-1, 1]. Everything here is pure: no models, no store, no clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = [
    "FrameRule", "Verdict", "FrameDecision", "DEFAULT_RULE", "SINGLE_FRAME",
    "AdaptRule", "DEFAULT_ADAPT", "confident_score", "adapt_gallery",
]


@dataclass(frozen=True)
class FrameRule:
    """Grant when at least ``k`` of the last ``n`` face frames score ≥ the threshold.

    Frames without a face do not count (they neither fill nor break the window). With
    several users (``owner`` indices), the ``k`` hits must be for the same user.
    ``FrameRule(1, 1)`` is the single-frame rule (the first matching frame decides).
    """

    k: int = 2
    n: int = 3

    def __post_init__(self) -> None:
        if not (isinstance(self.k, int) and isinstance(self.n, int) and 1 <= self.k <= self.n):
            raise ValueError(f"FrameRule needs ints 1 <= k <= n, got k={self.k!r}, n={self.n!r}")

    @property
    def name(self) -> str:
        return "single frame" if self.k == 1 else f"{self.k} of last {self.n}"


SINGLE_FRAME = FrameRule(1, 1)
# Chosen on the tuning half of the dev videos (`faceunlock eval-unlock --dev ../shared/data
# --rule 1/1 --rule 2/2 --rule 2/3 --rule 3/4 --rule 3/5 --rule 5/10`, attempts of 3 s of
# camera time, liveness verdict left out): at the 0.1.0-era thresholds the single-frame rule
# let 2 of 2,868 impostor attempts in (dlib ResNet, 0.9426) that every k >= 2 rule refused,
# at no false reject; at the per-group thresholds (dlib 0.9674, MobileFaceNet 0.7579) every
# rule had 0 false accepts and 0 false rejects there, and 2 of 3 widened MobileFaceNet's
# gap (highest impostor attempt 0.434 → 0.398, lowest genuine 0.862 → 0.846) for one more
# frame (mean 2.1 frames to a grant). k = 2 keeps the extra latency at one frame; n = 3
# tolerates one poor frame between two good ones. Photos cannot tell rules apart (a still
# photo repeats one frame).
DEFAULT_RULE = FrameRule(2, 3)


@dataclass(frozen=True)
class Verdict:
    """State of a :class:`FrameDecision` after a frame.

    granted: the rule is met (it stays met for the rest of the attempt).
    owner: the user index the grant is for (None until granted).
    score: when granted, the lowest of the ``k`` scores that granted (the weakest evidence,
        what a confidence test should look at); before that, the frame's own score.
    frames: face frames seen so far.
    """

    granted: bool
    owner: int | None
    score: float
    frames: int


class FrameDecision:
    """Feeds frame scores to a :class:`FrameRule` for one attempt.

    >>> d = FrameDecision(0.9, FrameRule(2, 3))
    >>> d.add(0.95).granted, d.add(0.5).granted, d.add(0.93).granted
    (False, False, True)

    After a grant every further :meth:`add` returns the same granted verdict; ``template``
    is then the template passed with the latest of the granting frames (None if none was
    passed).
    """

    def __init__(self, threshold: float, rule: FrameRule = DEFAULT_RULE) -> None:
        self.threshold = float(threshold)
        self.rule = rule
        self._window: deque[tuple[float, int, np.ndarray | None]] = deque(maxlen=rule.n)
        self._frames = 0
        self._granted: Verdict | None = None
        self.template: np.ndarray | None = None

    @property
    def verdict(self) -> Verdict | None:
        """The grant, once the rule is met (None before)."""
        return self._granted

    def add(self, score: float, owner: int = 0, template: np.ndarray | None = None) -> Verdict:
        """Record one face frame's ``score`` for user index ``owner`` (0 for a single user)."""
        if self._granted is not None:
            return self._granted
        self._frames += 1
        self._window.append((float(score), int(owner), template))
        hits = [(s, t) for s, o, t in self._window if o == owner and s >= self.threshold]
        if len(hits) >= self.rule.k:
            self._granted = Verdict(True, int(owner), min(s for s, _ in hits), self._frames)
            self.template = hits[-1][1]
            return self._granted
        return Verdict(False, None, float(score), self._frames)


# --------------------------------------------------------------------------- adaptation


@dataclass(frozen=True)
class AdaptRule:
    """When a granted frame may join the user's templates.

    margin: a grant is *confident* when its score ≥ threshold + margin × (1 − threshold):
        the same fraction of the way from the threshold to a perfect match for every
        embedder (their score scales differ).
    max_templates: templates per user after adaptation (a fixed budget).
    protected: the first ``protected`` stored templates (enrolment's) are never replaced.
    """

    margin: float = 0.25
    max_templates: int = 15
    protected: int = 5

    def __post_init__(self) -> None:
        if not 0.0 <= self.margin < 1.0:
            raise ValueError(f"AdaptRule.margin must be in [0, 1), got {self.margin!r}")
        if not (1 <= self.protected <= self.max_templates):
            raise ValueError(f"AdaptRule needs 1 <= protected <= max_templates, got {self.protected}, {self.max_templates}")


DEFAULT_ADAPT = AdaptRule()


def confident_score(threshold: float, margin: float) -> float:
    """The score a grant must reach to be confident: ``threshold + margin·(1 − threshold)``."""
    return float(threshold) + float(margin) * (1.0 - float(threshold))


def _top_mean(sims: np.ndarray, top_k: int) -> float:
    return float(np.sort(sims)[::-1][:top_k].mean())


def adapt_gallery(
    templates: np.ndarray,
    new_template: np.ndarray,
    score: float,
    threshold: float,
    *,
    live: bool,
    rule: AdaptRule = DEFAULT_ADAPT,
    top_k: int = 3,
) -> np.ndarray | None:
    """The user's templates after a grant, or None when they stay as they are.

    Args:
        templates: (K, D) unit-norm stored templates; the first ``rule.protected`` rows
            are enrolment templates and are never replaced.
        new_template: (D,) unit-norm template of the granting frame.
        score: the grant's score (for :class:`FrameDecision`, the weakest granting frame's).
        threshold: the cosine threshold the grant was judged at.
        live: the liveness check ran and passed. Without it nothing is ever adapted.

    Nothing changes unless the grant is confident (``score`` ≥ :func:`confident_score`),
    ``live`` is true, and the new template, scored like a probe against the protected
    enrolment templates alone (mean of its ``top_k`` best similarities), still reaches
    ``threshold`` — so a chain of updates can never walk the gallery away from the
    enrolled face. Below the budget the template is appended. At the budget, among the
    replaceable rows and the new template, the most redundant one (highest similarity to
    its nearest other template) is dropped; if that is the new template (ties included),
    nothing changes.
    """
    t = np.asarray(templates, dtype=np.float32)
    v = np.asarray(new_template, dtype=np.float32).reshape(-1)
    if t.ndim != 2 or t.shape[1] != v.size or t.shape[0] == 0:
        raise ValueError(f"templates must be (K, {v.size}) with K >= 1, got {t.shape}")
    if not live or not np.isfinite(score) or score < confident_score(threshold, rule.margin):
        return None
    protected = min(rule.protected, t.shape[0])
    if _top_mean(t[:protected] @ v, top_k) < threshold:
        return None
    if t.shape[0] < rule.max_templates:
        return np.concatenate([t, v[None]]).astype(np.float32)
    cand = np.concatenate([t, v[None]])
    sims = cand @ cand.T
    np.fill_diagonal(sims, -np.inf)
    redundancy = sims.max(axis=1)
    redundancy[:protected] = -np.inf  # enrolment templates are never dropped
    drop = int(np.argmax(redundancy[:-1]))
    if redundancy[-1] >= redundancy[drop]:
        return None  # the new template adds no more than the most redundant stored one
    return np.delete(cand, drop, axis=0).astype(np.float32)
