"""FaceUnlock: enrol a user, unlock as that user, identify among users.

Composes a :class:`~faceunlock.engine.FaceEngine` (frames → templates), a
:class:`~faceunlock.store.TemplateStore` (encrypted templates and lockout counters) and a
:class:`~faceunlock.policy.Policy` (thresholds, quality gates, lockout). Frames are
(H, W, 3) uint8 RGB arrays; any iterable works, including a camera generator.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import numbers
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import cv2
import numpy as np

from . import policy as pol
from .decision import DEFAULT_RULE, SINGLE_FRAME, AdaptRule, FrameDecision, FrameRule, adapt_gallery
from .detect import Face
from .embed import DEFAULT_EMBEDDER
from .engine import FaceEngine
from .errors import EnrollmentError, FaceUnlockError, ModelError
from .image import as_rgb
from .liveness import Liveness, Observation
from .liveness.blink import eye_aspect_ratio, open_eye_ear
from .policy import Policy
from .store import TemplateStore, UserRecord

__all__ = ["Reason", "UnlockResult", "IdentifyResult", "EnrollmentReport", "FrameQuality", "FaceUnlock", "fused_score"]


class Reason(enum.Enum):
    """Why an unlock attempt ended the way it did."""

    GRANTED = "granted"
    NO_MATCH = "no_match"
    NO_FACE = "no_face"
    LIVENESS_FAILED = "liveness_failed"
    LOCKED_OUT = "locked_out"
    NOT_ENROLLED = "not_enrolled"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class UnlockResult:
    """Outcome of :meth:`FaceUnlock.unlock`.

    score: best cosine similarity seen (None when no face was compared).
    frames_used: frames read from the iterable. elapsed_ms: wall time of the attempt.
    attempts_left: failed matches allowed before the next lockout step.
    locked_until: unix seconds when the lockout ends, ``math.inf`` until ``reset_lockout``,
    None when not locked.
    hint: what the UI should ask of the user (e.g. "blink or move slightly"), or None.
    liveness: the liveness verdict when the check ran (None otherwise).
    """

    granted: bool
    reason: Reason
    score: float | None
    frames_used: int
    elapsed_ms: float
    attempts_left: int
    locked_until: float | None
    hint: str | None = None
    liveness: object | None = None


@dataclass(frozen=True)
class IdentifyResult:
    """Outcome of :meth:`FaceUnlock.identify`: the matched user (None when nobody matched)."""

    user: str | None
    reason: Reason
    score: float | None
    frames_used: int
    elapsed_ms: float


@dataclass(frozen=True)
class FrameQuality:
    """Quality-gate verdict of one enrolment frame (``problem`` is None when accepted)."""

    problem: str | None
    face_px: float = 0.0
    yaw: float = 0.0
    pitch: float = 0.0
    sharpness: float = 0.0
    brightness: float = 0.0


@dataclass
class EnrollmentReport:
    """What :meth:`FaceUnlock.enroll` did.

    templates: templates now stored for the user; frames_seen / frames_accepted: frames
    read and frames that passed every gate; rejected: count per rejection reason; poses:
    (yaw, pitch) in degrees of the kept templates.
    """

    user: str
    templates: int
    frames_seen: int
    frames_accepted: int
    rejected: dict[str, int] = field(default_factory=dict)
    poses: list[tuple[float, float]] = field(default_factory=list)


ProgressFn = Callable[[int, int, FrameQuality], None]


def chip_quality(chip: np.ndarray) -> tuple[float, float]:
    """(sharpness, brightness) of a face chip: variance of the Laplacian of its grey image,
    and its mean grey level (0..255)."""
    grey = cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var()), float(grey.mean())


def _one_at_a_time(method):
    """Run ``method`` under the instance's attempt lock (one camera, one engine: the models'
    interpreters are not thread-safe, and an attempt must only ever see its own frames)."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self._attempt_lock:
            return method(self, *args, **kwargs)

    return run


class FaceUnlock:
    """Enrolment, unlock and identification over an encrypted template store.

    Args:
        store: where templates and lockout counters live.
        engine: the face engine (default: a new single-thread :class:`FaceEngine`).
        liveness: run the passive liveness check on unlock (default). ``True`` builds a
            :class:`~faceunlock.Liveness` on this engine; pass a configured ``Liveness`` to
            tune it, or ``False`` for tests on still images (no liveness: a photo unlocks).
        policy: thresholds, quality gates and lockout rules (default: Android Class 3).
            ``policy.require_challenge`` makes :meth:`unlock` require a passed challenge too.
        clock: unix-seconds clock, injectable for tests.

    Threads: one instance may be shared between threads. Its enrolments and attempts
    (:meth:`assess`, :meth:`enroll`, :meth:`unlock`, :meth:`identify`) run one at a time,
    since they share the engine's and the liveness check's models; a second caller waits
    until the running one has consumed its frames (an attempt: at most ``policy.timeout_s``
    of camera time, but for as long as its frame source blocks; an enrolment: all of its
    frames), with no timeout. The frame source and ``progress`` may call these methods
    from the same thread (the lock is re-entrant), but must never wait on another thread
    that does: that deadlocks. Do not share the ``engine`` or ``liveness`` objects you pass
    in with code running in another thread. Several processes may share one store file
    (docs/STORE.md).
    """

    #: When frames make a match (faceunlock.decision): None = ``DEFAULT_RULE`` (k of the
    #: last n face frames at or above the threshold; chosen with eval-unlock on the tuning
    #: half of the dev data) when liveness is on, the single-frame rule when it is off
    #: (still images: a repeated frame adds no evidence, and one image must unlock).
    frame_rule: FrameRule | None = None

    def __init__(
        self,
        store: TemplateStore,
        *,
        engine: FaceEngine | None = None,
        liveness=True,
        policy: Policy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.engine = engine or FaceEngine(threads=1)
        self.policy = policy or Policy()
        if liveness is True:
            liveness = Liveness(self.engine)
        self.liveness = liveness or None
        self._clock = clock
        self._attempt_lock = threading.RLock()

    # ------------------------------------------------------------------ thresholds
    @property
    def threshold(self) -> float:
        """Cosine threshold in force: the policy's explicit one, else the embedder's
        calibrated one for the policy's level."""
        if self.policy.threshold is not None:
            return float(self.policy.threshold)
        spec = self.engine.embedder_spec
        return spec.threshold if self.policy.level == "strong" else spec.convenience_threshold

    def _usable_threshold(self) -> float:
        """:attr:`threshold`, or :class:`ModelError` when it is not a number in [-1, 1] (an
        imported embedder without calibration has none): raised before an attempt is
        charged, so such a model costs the user no attempt."""
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not -1.0 <= float(t) <= 1.0:  # NumPy too
            raise ModelError(f"embedder {self.engine.embedder_spec.name!r} has no calibrated {self.policy.level} "
                             f"threshold ({t!r}): calibrate it and set it in its spec.json (docs/EMBEDDERS.md)")
        return float(t)

    # ------------------------------------------------------------------ enrolment
    @_one_at_a_time
    def assess(self, frame: np.ndarray) -> tuple[FrameQuality, Face | None, np.ndarray | None]:
        """Quality gates for one enrolment frame: exactly one face, large enough, pose in
        range, sharp, well exposed. Returns (verdict, face, chip)."""
        p = self.policy
        faces = self.engine.detect(frame)
        if not faces:
            return FrameQuality("no face"), None, None
        if len(faces) > 1:
            return FrameQuality("more than one face"), None, None
        f = faces[0]
        size = min(f.width, f.height)
        chip = self.engine.chip(frame, f)
        sharp, bright = chip_quality(chip)
        q = dict(face_px=size, yaw=f.yaw, pitch=f.pitch, sharpness=sharp, brightness=bright)
        if size < p.min_face_px:
            return FrameQuality("face too small: come closer", **q), f, chip
        if abs(f.yaw) > p.max_yaw_deg:
            return FrameQuality("head turned too far: face the camera", **q), f, chip
        if abs(f.pitch) > p.max_pitch_deg:
            return FrameQuality("head tilted too far: look at the camera", **q), f, chip
        if sharp < p.min_sharpness:
            return FrameQuality("image blurred: hold still", **q), f, chip
        if not p.min_brightness <= bright <= p.max_brightness:
            return FrameQuality("badly exposed: " + ("too dark" if bright < p.min_brightness else "too bright"), **q), f, chip
        return FrameQuality(None, **q), f, chip

    @_one_at_a_time
    def enroll(
        self, user: str, frames: Iterable[np.ndarray], *, progress: ProgressFn | None = None, append: bool = False
    ) -> EnrollmentReport:
        """Enrol ``user`` from frames of their face ("move your head slowly").

        Every frame goes through the quality gates; the kept set is 5–15 (policy) templates
        chosen for pose diversity, all of one person. Raises :class:`EnrollmentError` with
        the reasons when too few good frames arrive; nothing is stored then. With
        ``append=True`` the new templates join the user's existing ones (same embedder): the
        first ``policy.enroll_min_templates`` stored ones stay (the enrolment core that
        template adaptation never replaces), the rest are the newest, at most
        ``policy.enroll_max_templates`` in all; ``meta["poses"]`` stays aligned with them.
        The owner's open-eye level, the median eye aspect ratio of the good frames, is
        stored as ``meta["eye_open_ear"]`` (appending merges it, frame-weighted): the
        attention rule of :meth:`unlock` and :meth:`identify` is relative to it.
        ``progress(accepted, needed, quality)`` is called after each frame.
        """
        p = self.policy
        bar = self._consistency_bar()  # before any frame is read: an uncalibrated embedder cannot enrol
        cands: list[tuple[np.ndarray, FrameQuality, float]] = []  # (template, quality, eye aspect ratio)
        rejected: dict[str, int] = {}
        seen = 0
        for frame in frames:
            seen += 1
            quality, face, chip = self.assess(as_rgb(frame))
            if quality.problem is None:
                cands.append((self.engine._embedder.embed(chip), quality, eye_aspect_ratio(face.landmarks)))
            else:
                rejected[quality.problem] = rejected.get(quality.problem, 0) + 1
            if progress is not None:
                progress(min(len(cands), p.enroll_max_templates), p.enroll_min_templates, quality)
            if len(cands) >= 4 * p.enroll_max_templates:
                break
        kept = self._consistent(cands, rejected, bar)
        if len(kept) < p.enroll_min_templates:
            why = ", ".join(f"{k}: {v}" for k, v in sorted(rejected.items(), key=lambda kv: -kv[1])) or "no frames"
            raise EnrollmentError(
                f"not enough good frames to enrol {user!r}: {len(kept)} usable of {seen} "
                f"(need {p.enroll_min_templates}); rejected — {why}"
            )
        chosen = _diverse(kept, p.enroll_max_templates)
        temps = np.stack([c[0] for c in chosen]).astype(np.float32)
        poses = [(round(c[1].yaw, 1), round(c[1].pitch, 1)) for c in chosen]
        # the owner's open-eye level (attention rule, docs/LIVENESS.md): median eye aspect
        # ratio over every good frame of the enrolled face, not only the pose-diverse kept ones
        eye_open = open_eye_ear(c[2] for c in kept)
        eye_meta = {} if eye_open is None else {EYE_OPEN_KEY: round(eye_open, 4), EYE_OPEN_N_KEY: len(kept)}
        embedder = self.engine.embedder_spec.name
        now = self._clock()

        def apply(old: UserRecord | None) -> UserRecord:
            if append and old is not None:
                if old.embedder != embedder:
                    raise EnrollmentError(
                        f"{user!r} was enrolled with embedder {old.embedder!r}, not {embedder!r}: re-enrol without append"
                    )
                merged, merged_poses = _append_templates(old, temps, poses, p.enroll_min_templates,
                                                         p.enroll_max_templates)
                meta = {**old.meta, "poses": merged_poses, **_merge_eye_open(old.meta, eye_meta)}
                return UserRecord(templates=merged, embedder=embedder, created=old.created,
                                  failures=old.failures, locked_until=old.locked_until,
                                  permanent_lock=old.permanent_lock, last_attempt=old.last_attempt, meta=meta)
            if old is not None:  # re-enrolment replaces templates, never the lockout state
                return UserRecord(templates=temps, embedder=embedder, created=now, meta={"poses": poses, **eye_meta},
                                  failures=old.failures, locked_until=old.locked_until,
                                  permanent_lock=old.permanent_lock, last_attempt=old.last_attempt)
            return UserRecord(templates=temps, embedder=embedder, created=now, meta={"poses": poses, **eye_meta})

        rec = self.store.update(user, apply)
        return EnrollmentReport(user, int(rec.templates.shape[0]) if rec else 0, seen, len(cands), rejected, poses)

    def _consistency_bar(self) -> float:
        """Cosine every kept enrolment frame needs with the medoid frame: the embedder's
        convenience threshold (else its strong one) − 0.03; :class:`ModelError` when the
        embedder has neither (an imported model without calibration)."""
        return self.engine.embedder_spec.looser_threshold("needed to enrol with it") - 0.03

    def _consistent(self, cands, rejected, bar: float):
        """Drop candidates whose cosine with the medoid is below ``bar``: not the same person
        as the majority (a second person stepping in during enrolment)."""
        if len(cands) < 2:
            return cands
        t = np.stack([c[0] for c in cands])
        sims = t @ t.T
        medoid = int(np.argmax(np.median(sims, axis=1)))
        keep = [c for c, s in zip(cands, sims[medoid]) if s >= bar]
        if len(keep) < len(cands):
            rejected["a different face"] = rejected.get("a different face", 0) + len(cands) - len(keep)
        return keep

    # ------------------------------------------------------------------ unlock
    def _status(self, rec: UserRecord, now: float) -> tuple[bool, float | None]:
        return pol.lockout_status(rec, now, self.policy)

    def _adapt(self, rec: UserRecord, verdict, d: FrameDecision | None) -> UserRecord:
        """``rec`` after a grant, with the granting frame's template (from this attempt's own
        frame decision ``d``) swapped in when the grant was confident and live
        (:func:`faceunlock.decision.adapt_gallery`; off with ``Policy(adapt_templates=False)``;
        never without a passed liveness verdict)."""
        if (not self.policy.adapt_templates or d is None or d.verdict is None or d.template is None
                or rec.embedder != self.engine.embedder_spec.name):
            return rec
        p = self.policy
        rule = AdaptRule(max_templates=p.enroll_max_templates, protected=p.enroll_min_templates)
        new = adapt_gallery(rec.templates, d.template, d.verdict.score, self.threshold,
                            live=verdict is not None and bool(verdict.live), rule=rule, top_k=TOP_K)
        if new is None:
            return rec
        return dataclasses.replace(rec, templates=new, meta={**rec.meta, "adapted": int(rec.meta.get("adapted", 0)) + 1})

    def _match(
        self, frames: Iterable, gallery: np.ndarray, threshold: float, t0: float, *,
        owners: np.ndarray | None = None, fps: float | None = None, challenge=None,
        eye_open: list[float | None] | None = None,
    ):
        """Read frames until a decision, the frame budget or ``policy.timeout_s`` is spent.

        Each frame is detected once; its template is scored against ``gallery`` (per user
        when ``owners`` gives the user index of each row). A match is when
        :attr:`frame_rule` is met (k of the last n face frames at or above the threshold,
        for one user). Without liveness the match decides (within ``policy.max_frames``).
        With liveness, every frame also feeds a :class:`~faceunlock.liveness.LivenessSession`,
        but only face frames that themselves score at or above the threshold count as its
        evidence (the face judged live is the face that matched; in identify, frames that
        match two different users end the attempt as "face changed during the check")
        (texture, frozen feed, identity, and open eyes when ``policy.require_attention``:
        relative to the matched user's open-eye baseline ``eye_open[owner index]`` when
        known, see :func:`~faceunlock.liveness.passive.attention_bar`),
        and the attempt ends at the first frame where the match and a live verdict (and the
        passed challenge, when given) are all in. Three clearly non-matching face frames in
        a row end the attempt early. Time is **camera time**: a frame whose timestamp is
        more than ``policy.timeout_s`` (with a challenge: its prompts' deadlines +
        :data:`CHALLENGE_MARGIN_S`) after the first frame's ends the attempt unread. Frames
        are RGB arrays or ``(timestamp_s, frame)`` pairs; bare frames are timed by ``fps``
        (default 30), and so is a frame whose timestamp is not after the previous one's (NaN,
        repeated, backwards): it is taken as 1/fps later, so the deadline always comes.
        ``t0`` is not used for the deadline.

        Returns (best score or None, frames used, matched owner index or None, timed out
        before any match, liveness result or None, challenge state or None, the attempt's
        :class:`~faceunlock.decision.FrameDecision`).
        """
        live = self.liveness
        pol_ = self.policy
        # Camera time: the attempt lasts policy.timeout_s of the frames' own timestamps (a
        # challenge: its prompts' deadlines plus a margin), so a slow CPU reads fewer frames
        # but the frames it reads get the verdict they would get on a fast one. t0 (wall
        # clock) only times the result.
        limit_s = pol_.timeout_s
        if challenge is not None:
            limit_s = max(limit_s, len(challenge.prompts) * challenge.step_timeout_s + CHALLENGE_MARGIN_S)
        budget = pol_.max_frames if live is None else MAX_ATTEMPT_FRAMES
        session = None if live is None else live.session(require_attention=pol_.require_attention)
        best, used, hit, clear_misses = None, 0, None, 0
        verdict, cstate, timed_out, t_first = None, None, False, None
        rule = self.frame_rule or (DEFAULT_RULE if live is not None else SINGLE_FRAME)
        decision = FrameDecision(threshold, rule)  # this attempt's own: never shared state
        step_s = 1.0 / _frame_rate(fps)
        t_prev = t_origin = None  # times are taken relative to the first finite timestamp
        owner_of_evidence: set[int] = set()  # users whose matching frames fed the liveness verdict
        for item in frames:
            t_frame = None
            if isinstance(item, tuple) and len(item) == 2:
                t_frame, item = item
            t_frame = float(t_frame) if t_frame is not None else used * step_s
            if t_origin is None and math.isfinite(t_frame):
                t_origin = t_frame  # (1/fps added to a huge absolute time can be lost to rounding)
            if t_origin is not None:
                t_frame -= t_origin
            if t_prev is not None and not t_frame > t_prev:  # NaN, repeated or backwards: a
                t_frame = t_prev + step_s  # frame takes at least 1/fps, so the deadline still comes
            elif not math.isfinite(t_frame):
                t_frame = 0.0 if t_prev is None else t_prev + step_s
            t_prev = t_frame
            if t_first is None:
                t_first = t_frame
            if t_frame - t_first > limit_s:  # captured after the attempt's camera-time limit
                timed_out = True
                break
            used += 1
            frame = as_rgb(item)
            faces = self.engine.detect(frame)
            tpl = None
            evidence = False
            if faces:
                tpl = self.engine.face_template(frame, faces[0])
                s, k = fused_score(gallery, tpl, owners)
                # Only frames that match count toward the liveness verdict: the face judged
                # live is the face that matched (a photo of the owner cannot borrow a live
                # stranger's texture, eyes or motion).
                evidence = s >= threshold
                if evidence:
                    owner_of_evidence.add(k)
                best = s if best is None else max(best, s)
                if hit is None and decision.add(s, k, tpl).granted:  # the frame rule (decision.py)
                    hit = k
                    passive = getattr(session, "passive", None)  # a stand-in session may have none
                    if passive is not None and eye_open is not None:
                        # attention is judged against the matched user's own open eyes
                        passive.attention_baseline = eye_open[k]
                if hit is None:
                    clear_misses = clear_misses + 1 if s < threshold - CLEAR_MISS_MARGIN else 0
                    if clear_misses >= CLEAR_MISS_FRAMES:
                        break  # a confident no-match: stop early
                elif live is None:
                    break  # no liveness: the match decides
            if challenge is not None and not challenge.state.done:
                # only a face that matches the user may answer a prompt: any other face is seen
                # as no usable face (a second face still fails the challenge)
                cstate = challenge.feed_observation(
                    Observation(t_frame, faces[0].landmarks if faces and evidence else None,
                                tpl if evidence else None, len(faces)))
            if session is not None:
                # the same frame, landmarks and template feed the passive check (texture on
                # the challenge frames too); it is judged once per frame, never again after
                verdict = session.add(frame, faces, t_frame, tpl, evidence=evidence)
                if hit is not None and owner_of_evidence - {hit}:  # identify: frames of two users
                    verdict = dataclasses.replace(verdict, live=False, score=0.0, reason="face changed during the check",
                                                  final=True)
                    break
                if hit is not None:
                    if verdict.live and (challenge is None or challenge.state.done):
                        break
                    if verdict.final:
                        break  # a second face / another identity: no later frame can help
                    if challenge is not None and challenge.state.done and not challenge.state.passed:
                        break
            if used >= budget:
                break
        if challenge is not None:
            cstate = challenge.state
        return best, used, hit, timed_out and hit is None, verdict if hit is not None else None, cstate, decision

    @_one_at_a_time
    def unlock(self, user: str, frames: Iterable[np.ndarray], *, challenge=None, fps: float | None = None) -> UnlockResult:
        """Try to unlock as ``user`` from frames; stops at the first matching frame when
        liveness is off, else when the match and the liveness verdict are both in.

        Frames are RGB arrays or ``(timestamp_s, frame)`` pairs (``fps`` times bare frames
        for the liveness check; default 30). With liveness on (the default), a match is
        granted only when the passive check (texture, frozen feed, one identity, and open eyes
        with ``policy.require_attention``; docs/LIVENESS.md) is live on the frames read within
        ``policy.timeout_s`` of camera time; otherwise the result is ``LIVENESS_FAILED``
        (counted as a failed attempt — it is an attack attempt), with ``hint`` saying what
        the user can do (e.g. "open your eyes and look at the camera"). With ``policy.require_challenge``, pass
        ``challenge=liveness.new_challenge()`` (show ``challenge.state.prompt`` to the user
        while frames are read): the same frames feed it, and it must pass too.

        Attempt accounting (docs/STORE.md, "Attempt accounting"): before the first frame is
        read, one store update under the exclusive lock checks the lockout AND charges the
        attempt as a failure; a grant refunds it (the failure count is reset). So concurrent
        attempts cannot all slip past the check, and an attempt that is interrupted (Ctrl-C,
        SIGKILL, an exception from the frame source) stays charged. Failed matches lock the
        user out (5 → 30 s, doubling each further 5, permanent at 20). An attempt in which no
        face was ever seen (``NO_FACE``, ``TIMEOUT``) is refunded — nothing was compared —
        but only if no other attempt was charged for the user meanwhile (fail closed).
        """
        t0 = time.perf_counter()
        if self.policy.require_challenge and challenge is None:
            raise FaceUnlockError("the policy requires a liveness challenge: pass challenge=Liveness().new_challenge()")
        if challenge is not None and self.liveness is None:
            raise FaceUnlockError("a challenge needs liveness on: construct FaceUnlock with liveness=True")
        _frame_rate(fps)  # a bad fps is the caller's error, refused before the attempt is charged
        self._usable_threshold()  # so is an uncalibrated embedder
        if challenge is not None and challenge.started:
            raise FaceUnlockError("this challenge was already used: make a new one for every attempt "
                                  "(Liveness.new_challenge())")
        now = self._clock()
        charge = self._charge([user], now, check_embedder=True)
        if charge.charged.get(user) is None:
            if charge.locked.get(user) is not None:
                return UnlockResult(False, Reason.LOCKED_OUT, None, 0, _ms(t0), 0, charge.locked[user])
            return UnlockResult(False, Reason.NOT_ENROLLED, None, 0, _ms(t0), 0, None)
        rec = charge.charged[user]
        best, used, hit, timed_out, verdict, cstate, decision = self._match(
            frames, rec.templates, self.threshold, t0, fps=fps, challenge=challenge,
            eye_open=[eye_open_baseline(rec)])
        now = self._clock()
        if hit is not None:
            live_ok = verdict is None or verdict.live
            chal_ok = challenge is None or (cstate is not None and cstate.passed)
            if live_ok and chal_ok:
                done = self._refund_grant(charge, user, now, verdict, decision)
                if done is None:  # removed meanwhile, or permanently locked by another attempt
                    return UnlockResult(False, Reason.LOCKED_OUT if charge.lost.get(user) else Reason.NOT_ENROLLED,
                                        best, used, _ms(t0), 0, math.inf if charge.lost.get(user) else None)
                return UnlockResult(True, Reason.GRANTED, best, used, _ms(t0), pol.attempts_left(done, self.policy),
                                    None, None, verdict)
            locked, until = self._status(rec, now)
            hint = verdict.hint if verdict is not None and not verdict.live else None
            if hint is None and not chal_ok and cstate is not None and not cstate.done and cstate.prompt is not None:
                hint = cstate.prompt.value
            return UnlockResult(False, Reason.LIVENESS_FAILED, best, used, _ms(t0),
                                pol.attempts_left(rec, self.policy), until if locked else None, hint, verdict)
        if best is None:
            reason = Reason.TIMEOUT if timed_out else Reason.NO_FACE
            rec = self._refund_unseen(charge, now).get(user) or rec
            return UnlockResult(False, reason, None, used, _ms(t0), pol.attempts_left(rec, self.policy), None)
        locked, until = self._status(rec, now)
        return UnlockResult(False, Reason.NO_MATCH, best, used, _ms(t0), pol.attempts_left(rec, self.policy),
                            until if locked else None)

    @_one_at_a_time
    def identify(self, frames: Iterable[np.ndarray], *, fps: float | None = None) -> IdentifyResult:
        """Which enrolled user is in front of the camera (for multi-user devices).

        Candidates are the users enrolled with this engine's embedder who are not locked
        out. Before the first frame is read, ONE store update (one authenticated read, one
        write) charges a failed attempt to every candidate; a grant refunds only the
        identified user. So a failed identification (no match, or a match that fails
        liveness), and an interrupted one, counts as a failed match for every user that
        could have matched: guessing cannot bypass the lockout. By design this means one
        stranger locks out EVERY user with five failed tries of ``identify``; users then
        unlock by name (:meth:`unlock`, which also fails on their lock) or after
        :meth:`reset_lockout`. When every enrolled user is locked out the result is
        ``LOCKED_OUT``; ``NOT_ENROLLED`` only when nobody is enrolled with this embedder.
        An attempt in which no face was seen is refunded as in :meth:`unlock`.
        """
        if self.policy.require_challenge:
            raise FaceUnlockError("the policy requires a liveness challenge, which identify() does not run: "
                                  "use unlock(user, frames, challenge=...)")
        t0 = time.perf_counter()
        now = self._clock()
        _frame_rate(fps)  # refused before the attempt is charged
        self._usable_threshold()
        charge = self._charge(None, now, check_embedder=False)
        names = sorted(charge.charged)
        if not names:
            return IdentifyResult(None, Reason.LOCKED_OUT if charge.locked else Reason.NOT_ENROLLED, None, 0, _ms(t0))
        galleries = [charge.charged[u].templates for u in names]
        owner = np.repeat(np.arange(len(names)), [len(g) for g in galleries])
        best, used, hit, timed_out, verdict, _, decision = self._match(
            frames, np.concatenate(galleries), self.threshold, t0, owners=owner, fps=fps,
            eye_open=[eye_open_baseline(charge.charged[u]) for u in names])
        now = self._clock()
        if hit is not None and (verdict is None or verdict.live):
            name = names[hit]
            if self._refund_grant(charge, name, now, verdict, decision) is None:
                reason = Reason.LOCKED_OUT if charge.lost.get(name) else Reason.NOT_ENROLLED
                return IdentifyResult(None, reason, best, used, _ms(t0))
            return IdentifyResult(name, Reason.GRANTED, best, used, _ms(t0))
        if best is None:
            self._refund_unseen(charge, now)
            return IdentifyResult(None, Reason.TIMEOUT if timed_out else Reason.NO_FACE, None, used, _ms(t0))
        reason = Reason.NO_MATCH if hit is None else Reason.LIVENESS_FAILED
        return IdentifyResult(None, reason, best, used, _ms(t0))

    # ------------------------------------------------------------------ attempt accounting
    def _charge(self, users: list[str] | None, now: float, *, check_embedder: bool) -> "_Charge":
        """One exclusive store update: check each user's lockout and charge a failed attempt
        to every user that may be tried (``users=None``: every user enrolled with this
        engine's embedder). Nothing is written when nobody is charged."""
        embedder = self.engine.embedder_spec.name
        out = _Charge(now=now)

        def fn(recs: dict[str, UserRecord | None]) -> dict[str, UserRecord | None]:
            changes: dict[str, UserRecord | None] = {}
            for u in sorted(recs):
                r = recs[u]
                if r is None:
                    continue
                if r.embedder != embedder:
                    if check_embedder:
                        self._check_embedder(r)  # raises: nothing is written
                    continue
                locked, until = self._status(r, now)
                if locked:
                    out.locked[u] = until
                    continue
                out.before[u] = r
                changes[u] = out.charged[u] = pol.record_failure(r, now, self.policy)
            return changes

        self.store.update_many(users, fn)
        return out

    def _refund_grant(self, charge: "_Charge", user: str, now: float, verdict,
                      decision: FrameDecision | None = None) -> UserRecord | None:
        """Refund a granted user's charged attempt (``record_success``). Returns the new
        record, or None when the user was removed meanwhile or another attempt has since
        locked them out permanently (the grant is then withdrawn, fail closed; ``charge.lost``
        says which). A permanent lock set by this attempt's own charge is lifted: that charge
        is what is being refunded. Without a template change this writes only the store's
        attempt counters (:meth:`TemplateStore.update_counters`)."""
        mine, before = charge.charged[user], charge.before[user]
        lost: list[bool] = []

        def settle(r):  # a UserRecord or store Counters; None when the grant is withdrawn
            if r.permanent_lock:
                if before.permanent_lock or _lockout_fields(r) != _lockout_fields(mine):
                    lost.append(True)
                    return None
                r = dataclasses.replace(r, permanent_lock=False)
            return r

        if self._granted_record(mine, now, verdict, decision).templates is mine.templates:
            def counters(cur):
                c = cur[user]
                c = None if c is None else settle(c)
                return {} if c is None else {user: pol.record_success(c, now)}

            c = self.store.update_counters([user], counters)[user]
            if lost:
                charge.lost[user] = True
                return None
            if c is None:
                return None
            return dataclasses.replace(mine, failures=c.failures, locked_until=c.locked_until,
                                       permanent_lock=c.permanent_lock, last_attempt=c.last_attempt)

        def fn(recs: dict[str, UserRecord | None]) -> dict[str, UserRecord | None]:
            r = recs[user]
            r = None if r is None else settle(r)
            return {} if r is None else {user: self._granted_record(r, now, verdict, decision)}

        got = self.store.update_many([user], fn)[user]
        if lost:
            charge.lost[user] = True
            return None
        return got

    def _granted_record(self, rec: UserRecord, now: float, verdict, decision: FrameDecision | None) -> UserRecord:
        """``rec`` after a grant: failure count and timed lockout cleared."""
        return self._adapt(pol.record_success(rec, now), verdict, decision)

    def _refund_unseen(self, charge: "_Charge", now: float) -> dict[str, UserRecord | None]:
        """Refund attempts in which no face was seen: each charged user whose lockout state
        is still exactly what this attempt's charge wrote gets its pre-attempt failure count
        and lockout back; a user charged again by another attempt meanwhile is not refunded."""
        users = sorted(charge.charged)

        def fn(recs: dict[str, UserRecord | None]) -> dict[str, UserRecord | None]:
            changes: dict[str, UserRecord | None] = {}
            for u in users:
                r = recs.get(u)
                if r is None or _lockout_fields(r) != _lockout_fields(charge.charged[u]):
                    continue
                b = charge.before[u]
                changes[u] = dataclasses.replace(r, failures=b.failures, locked_until=b.locked_until,
                                                 permanent_lock=b.permanent_lock)
            return changes

        return self.store.update_counters(users, fn) if users else {}  # type: ignore[arg-type,return-value]

    # ------------------------------------------------------------------ admin
    def users(self) -> list[str]:
        """Enrolled user ids, sorted."""
        return self.store.users()

    def remove_user(self, user: str) -> bool:
        """Delete the user and all their biometric data; False when not enrolled."""
        return self.store.remove(user)

    def reset_lockout(self, user: str) -> None:
        """Lift every lockout of ``user`` (call after the primary credential succeeded)."""
        if self.store.update(user, lambda r: pol.reset_lockout(r) if r else None) is None:
            raise FaceUnlockError(f"user {user!r} is not enrolled")

    def _check_embedder(self, rec: UserRecord) -> None:
        have, want = rec.embedder, self.engine.embedder_spec.name
        if have != want:  # one line: the CLI prints it as is
            raise FaceUnlockError(
                f"this user was enrolled with embedder {have!r} but the engine uses {want!r} (the default "
                f"embedder is {DEFAULT_EMBEDDER.name!r} after faceunlock 0.1.0); templates of different embedders cannot be "
                f"compared: re-enrol the user (faceunlock enroll USER ...), or keep {have!r} with "
                f"FaceEngine(embedder={have!r}) / --embedder {have}"
            )


TOP_K = 3
# Frames of a default 3-s attempt at 30 fps (eval-unlock's window). With liveness on, an
# attempt is limited by camera time (policy.timeout_s of frame timestamps), not by a frame
# count; MAX_ATTEMPT_FRAMES only guards against a source whose clock does not advance.
LIVENESS_MAX_FRAMES = 90
MAX_ATTEMPT_FRAMES = 1000
# Camera seconds allowed beyond a challenge's prompts × step_timeout_s (reaction time).
CHALLENGE_MARGIN_S = 1.0


# An attempt ends early as NO_MATCH after this many consecutive face frames scoring at
# least this far below the threshold (a different person, not a poor frame of the owner).
def _frame_rate(fps: float | None) -> float:
    """Frames per second for bare frames (None = 30); anything but a finite number > 0 is a
    :class:`FaceUnlockError` (the attempt's deadline would never come)."""
    rate = 30.0 if fps is None else float(fps)
    if not (math.isfinite(rate) and rate > 0):
        raise FaceUnlockError(f"fps must be a finite number > 0 (or None for 30), got {fps!r}")
    return rate


CLEAR_MISS_FRAMES = 3
CLEAR_MISS_MARGIN = 0.04


def fused_score(gallery: np.ndarray, template: np.ndarray, owners: np.ndarray | None = None) -> tuple[float, int]:
    """Score of one probe template against enrolled templates: the mean of its ``TOP_K``
    best cosine similarities to one user's templates (all of them when fewer).

    Averaging over several templates keeps the false-accept rate of a whole enrolment at
    or below that of a single comparison at the same threshold (the mean reaches the
    threshold only if a single comparison does), unlike the maximum, which grows with the
    number of templates. With ``owners`` (an integer user index per gallery row) the best
    user wins (the lowest index among equal scores), scored for all users in one
    vectorised pass: rows grouped by owner (a stable sort, skipped when already grouped),
    each group padded to a row of a (users, max rows) matrix, top ``TOP_K`` per row by
    ``np.partition``. Returns (score, owner index; 0 without owners).
    """
    sims = gallery @ template
    if owners is None:
        return float(np.sort(sims)[::-1][:TOP_K].mean()), 0
    own = np.asarray(owners)
    if own.shape != sims.shape or own.size == 0:
        raise ValueError("owners must give one user index per gallery row")
    if own.size > 1 and np.any(own[1:] < own[:-1]):
        order = np.argsort(own, kind="stable")
        own, sims = own[order], sims[order]
    starts = np.flatnonzero(np.concatenate(([True], own[1:] != own[:-1])))
    counts = np.diff(np.append(starts, own.size))
    users, width = starts.size, int(counts.max())
    if int(counts.min()) == width:  # every user has the same number of templates
        grid = sims.reshape(users, width)
    else:
        grid = np.full((users, width), -np.inf, dtype=sims.dtype)
        flat = np.arange(own.size) + np.repeat(np.arange(users) * width - starts, counts)
        grid.ravel()[flat] = sims
    if width > TOP_K:
        grid = np.partition(grid, width - TOP_K, axis=1)[:, width - TOP_K :]
    taken = np.minimum(counts, TOP_K)
    means = np.where(np.isneginf(grid), 0.0, grid).sum(axis=1, dtype=np.float64) / taken
    i = int(np.argmax(means))
    return float(means[i]), int(own[starts[i]])


@dataclass
class _Charge:
    """What :meth:`FaceUnlock._charge` did: records before and after the charge, users
    found locked (with their lockout end), and grants withdrawn by a later lock."""

    now: float
    before: dict[str, UserRecord] = field(default_factory=dict)
    charged: dict[str, UserRecord] = field(default_factory=dict)
    locked: dict[str, float] = field(default_factory=dict)
    lost: dict[str, bool] = field(default_factory=dict)


def _lockout_fields(r: UserRecord) -> tuple[int, float, bool, float]:
    return (int(r.failures), float(r.locked_until), bool(r.permanent_lock), float(r.last_attempt))


#: UserRecord.meta keys: the owner's open-eye eye aspect ratio (median over the good
#: enrolment frames; the attention rule's per-user baseline) and how many frames it is over.
EYE_OPEN_KEY = "eye_open_ear"
EYE_OPEN_N_KEY = "eye_open_n"


def _append_templates(old: UserRecord, temps: np.ndarray, poses: list, keep: int, cap: int) -> tuple[np.ndarray, list]:
    """Templates (and their poses, aligned row for row) after appending ``temps`` to
    ``old``'s: the first ``keep`` stored templates stay (enrolment's core, which template
    adaptation never replaces either), the remaining ``cap − keep`` rows are the newest of
    the rest. ``old.meta["poses"]`` is re-aligned first: older stores let it grow past the
    templates (the newest entries are the kept templates'); a missing pose is null."""
    n_old = int(old.templates.shape[0])
    old_poses = list(old.meta.get("poses", []) or [])
    old_poses = old_poses[-n_old:] if len(old_poses) >= n_old else old_poses + [None] * (n_old - len(old_poses))
    core = min(keep, n_old)
    room = max(cap - core, 0)
    rest = np.concatenate([old.templates[core:], temps])
    rest_poses = old_poses[core:] + list(poses)
    start = max(len(rest) - room, 0)
    merged = np.concatenate([old.templates[:core], rest[start:]])
    return merged, old_poses[:core] + rest_poses[start:]


def _merge_eye_open(old_meta: dict, new: dict) -> dict:
    """The open-eye baseline after an appended enrolment: the frame-weighted mean of the
    stored and the new medians (either alone when the other is missing)."""
    if not new:
        return {}
    try:
        b0, n0 = float(old_meta[EYE_OPEN_KEY]), int(old_meta.get(EYE_OPEN_N_KEY, 1))
    except (KeyError, TypeError, ValueError, OverflowError):  # a record edited by hand: start afresh
        return new
    if not (math.isfinite(b0) and b0 > 0 and n0 > 0):
        return new
    b1, n1 = float(new[EYE_OPEN_KEY]), int(new[EYE_OPEN_N_KEY])
    return {EYE_OPEN_KEY: round((b0 * n0 + b1 * n1) / (n0 + n1), 4), EYE_OPEN_N_KEY: n0 + n1}


def eye_open_baseline(rec: UserRecord) -> float | None:
    """The user's open-eye EAR stored at enrolment (``meta["eye_open_ear"]``), or None for a
    record enrolled before it was stored (the attention rule then uses its absolute floor)."""
    try:
        b = float(rec.meta[EYE_OPEN_KEY])
    except (KeyError, TypeError, ValueError):
        return None
    return b if math.isfinite(b) and b > 0 else None


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def _diverse(cands: list[tuple], n: int) -> list[tuple]:
    """Up to ``n`` candidates ((template, quality, ...) tuples) spread over head poses: start from the most frontal (sharpest
    among equals), then repeatedly add the candidate farthest in (yaw, pitch) from those kept."""
    if len(cands) <= n:
        return list(cands)
    poses = np.array([(c[1].yaw, c[1].pitch) for c in cands])
    sharp = np.array([c[1].sharpness for c in cands])
    first = int(np.lexsort((-sharp, np.round(np.hypot(poses[:, 0], poses[:, 1])))) [0])
    chosen = [first]
    dist = np.linalg.norm(poses - poses[first], axis=1)
    dist[first] = -1
    while len(chosen) < n:
        k = int(np.argmax(dist))
        if dist[k] <= 0 and math.isfinite(dist[k]):
            # all remaining share a pose: prefer sharper frames
            rest = [i for i in np.argsort(-sharp) if i not in chosen]
            chosen.extend(rest[: n - len(chosen)])
            break
        chosen.append(k)
        dist = np.minimum(dist, np.linalg.norm(poses - poses[k], axis=1))
        dist[chosen] = -1
    return [cands[i] for i in chosen]
