"""Active challenge–response: a random sequence of prompts, each with a deadline.

Prompts come from {turn left, turn right, look up, blink}; a challenge draws 2–3 distinct
ones in random order from an unpredictable source (``secrets.SystemRandom`` by default), so
a pre-recorded video cannot know them. Each prompt must be answered before its deadline
(``step_timeout_s`` after it was shown); making a *different* head movement while a prompt
is shown fails the challenge (a replay that moves at random fails quickly).

Identity constancy: the same face must stay in view throughout — a second face, the face
lost for longer than ``max_gap_s``, a jump of the face between consecutive frames, or an
identity template that does not match the previous face frame's fails the challenge.

This module is pure: it consumes :class:`Observation` objects (time, landmarks, optional
identity template). :meth:`Challenge.feed` takes frames only when the challenge was made by
:meth:`faceunlock.Liveness.new_challenge`, which supplies the function turning a frame into
an observation. Head pose convention: yaw > 0 = the nose towards the image's right, which is
the user's LEFT for an unmirrored camera frame (pass ``mirrored=True`` for mirrored frames).
"""

from __future__ import annotations

import enum
import math
import secrets
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .blink import BlinkDetector
from .tracks import rotation_angles_deg, RIGID_LANDMARKS

__all__ = ["Prompt", "Observation", "ChallengeState", "Challenge", "prompted"]


class Prompt(enum.Enum):
    """What the user is asked to do (the value is the text to show)."""

    TURN_LEFT = "turn your head to the left"
    TURN_RIGHT = "turn your head to the right"
    LOOK_UP = "look up"
    BLINK = "blink"


@dataclass(frozen=True)
class Observation:
    """One frame as the challenge sees it.

    t: seconds (any origin, increasing). landmarks: (468, 3) of the single face, or None when
    no face. template: unit-norm identity template of that face, or None when not computed.
    faces: number of faces in the frame.
    """

    t: float
    landmarks: np.ndarray | None
    template: np.ndarray | None = None
    faces: int = 1


@dataclass(frozen=True)
class ChallengeState:
    """Where a challenge stands after a frame.

    prompt: what to show now (None once done). step / steps: 0-based index of the prompt and
    the number of prompts. done: finished (passed or failed). passed: every prompt answered
    in time by the same face. reason: why it failed (None otherwise). time_left_s: seconds
    left for the current prompt.
    """

    prompt: Prompt | None
    step: int
    steps: int
    done: bool
    passed: bool
    reason: str | None
    time_left_s: float


class Challenge:
    """A challenge–response sequence.

    Args:
        prompts: the prompts in order (use :meth:`random` for an unpredictable one).
        step_timeout_s: seconds allowed per prompt (3.0).
        clock: seconds, used when an observation/frame comes without a timestamp
            (``time.monotonic`` by default; inject for tests).
        turn_deg: head rotation from the starting pose that answers a turn (15°) or look-up (10°·1.5 = ``turn_deg``·2/3).
        identity_threshold: minimum cosine similarity of every template to the previous one
            (0.0 disables the template check; the front door sets the embedder's).
        max_gap_s: longest time without a face tolerated (1.0 s).
        mirrored: frames are mirrored (a selfie preview): swaps left and right.
        observe: function frame → Observation used by :meth:`feed` (set by the front door).
    """

    def __init__(self, prompts: Sequence[Prompt], *, step_timeout_s: float = 3.0,
                 clock: Callable[[], float] = time.monotonic, turn_deg: float = 15.0,
                 identity_threshold: float = 0.0, max_gap_s: float = 1.0, mirrored: bool = False,
                 observe: Callable[[np.ndarray, float], Observation] | None = None) -> None:
        prompts = list(prompts)
        if not prompts or not all(isinstance(p, Prompt) for p in prompts):
            raise ValueError("prompts must be a non-empty sequence of Prompt")
        if not step_timeout_s > 0:
            raise ValueError(f"step_timeout_s must be > 0 seconds, got {step_timeout_s!r}")
        self.prompts = prompts
        self.step_timeout_s = float(step_timeout_s)
        self.turn_deg = float(turn_deg)
        self.identity_threshold = float(identity_threshold)
        self.max_gap_s = float(max_gap_s)
        self.mirrored = mirrored
        self._clock = clock
        self._observe = observe
        self._step = 0
        self._step_start: float | None = None
        self._last_face_t: float | None = None
        self._last_centre: np.ndarray | None = None
        self._ref_rigid: np.ndarray | None = None
        self._ref_template: np.ndarray | None = None
        self._base_pose: list[tuple[float, float]] = []
        self._regions_at_start: set[Prompt] = set()
        self._blinks = BlinkDetector()
        self._blinks_at_start = 0
        self._done = False
        self._passed = False
        self._reason: str | None = None
        self._now = 0.0
        self._last_t: float | None = None  # timestamp of the last observation fed
        self.min_identity_similarity = 1.0

    @classmethod
    def random(cls, n: int | None = None, *, rng=None, **kwargs) -> "Challenge":
        """A challenge of ``n`` (default: 2 or 3, at random) distinct prompts in random order.

        ``rng`` needs ``randrange`` and ``sample`` (``random.Random`` fits; default
        ``secrets.SystemRandom()``, unpredictable). ``kwargs`` go to the constructor.
        """
        rng = rng or secrets.SystemRandom()
        if n is None:
            n = 2 + rng.randrange(2)
        if not 1 <= n <= len(Prompt):
            raise ValueError(f"n must be in 1..{len(Prompt)}, got {n!r}")
        return cls(rng.sample(list(Prompt), n), **kwargs)

    # ------------------------------------------------------------------ state
    def _state(self) -> ChallengeState:
        left = 0.0
        if not self._done and self._step_start is not None:
            left = max(0.0, self.step_timeout_s - (self._now - self._step_start))
        elif not self._done:
            left = self.step_timeout_s
        prompt = None if self._done else self.prompts[self._step]
        return ChallengeState(prompt, self._step, len(self.prompts), self._done, self._passed, self._reason, left)

    @property
    def state(self) -> ChallengeState:
        """The current state (the prompt to show before the first frame)."""
        return self._state()

    def _fail(self, reason: str) -> ChallengeState:
        self._done, self._passed, self._reason = True, False, reason
        return self._state()

    def _pose(self, lm: np.ndarray) -> tuple[float, float]:
        yaw, pitch = rotation_angles_deg(self._ref_rigid, lm[RIGID_LANDMARKS])
        return (-yaw if self.mirrored else yaw), pitch

    def _regions(self, pose: tuple[float, float]) -> set[Prompt]:
        b = np.median(np.asarray(self._base_pose), axis=0)
        dy, dp = pose[0] - b[0], pose[1] - b[1]
        out = set()
        if dy >= self.turn_deg:
            out.add(Prompt.TURN_LEFT)
        if dy <= -self.turn_deg:
            out.add(Prompt.TURN_RIGHT)
        if dp >= self.turn_deg * 2 / 3:
            out.add(Prompt.LOOK_UP)
        return out

    # ------------------------------------------------------------------ input
    @property
    def started(self) -> bool:
        """True once anything was fed (or it ended): a challenge answers one attempt only."""
        return self._done or self._last_t is not None

    def feed(self, frame, t: float | None = None) -> ChallengeState:
        """Feed one RGB frame (or a ``(timestamp_s, frame)`` pair); returns the new state.

        Only for challenges made by :meth:`faceunlock.Liveness.new_challenge`.
        """
        if isinstance(frame, tuple) and len(frame) == 2:
            t, frame = frame
        if self._observe is None:
            raise TypeError("this Challenge has no frame observer: use Liveness.new_challenge() or feed_observation()")
        if self._done:
            return self._state()
        return self.feed_observation(self._observe(frame, self._clock() if t is None else float(t)))

    def feed_observation(self, obs: Observation) -> ChallengeState:
        """Feed one :class:`Observation`; returns the new state."""
        if self._done:
            return self._state()
        now = float(obs.t)
        if not math.isfinite(now):
            return self._fail("unusable frame timestamp (not a finite number)")
        if self._last_t is not None and now < self._last_t:
            return self._fail("frame timestamps went backwards")  # a deadline must be able to pass
        self._now = self._last_t = now
        if self._step_start is None:
            self._step_start = now
        if now - self._step_start > self.step_timeout_s:
            return self._fail(f"timed out on '{self.prompts[self._step].value}'")
        if obs.faces > 1:
            return self._fail("more than one face in view")
        if obs.landmarks is None or obs.faces == 0:
            if self._last_face_t is not None and now - self._last_face_t > self.max_gap_s:
                return self._fail("face lost")
            if self._last_face_t is None and now - self._step_start > self.max_gap_s:
                return self._fail("no face")
            return self._state()
        lm = np.asarray(obs.landmarks, np.float64)
        # continuity: the face must not jump between frames (a swap)
        iod = float(np.linalg.norm(lm[33, :2] - lm[263, :2])) or 1.0
        centre = lm[RIGID_LANDMARKS, :2].mean(0)
        if self._last_centre is not None:
            dt = max(now - (self._last_face_t or now), 1e-3)
            if np.linalg.norm(centre - self._last_centre) > iod * max(1.0, 4.0 * dt):
                return self._fail("the face jumped between frames")
        self._last_centre, self._last_face_t = centre, now
        # identity
        if obs.template is not None and self.identity_threshold > 0:
            tpl = np.asarray(obs.template, np.float64)
            if self._ref_template is not None:  # against the previous face frame's (a swap is sudden)
                sim = float(tpl @ self._ref_template)
                self.min_identity_similarity = min(self.min_identity_similarity, sim)
                if sim < self.identity_threshold:
                    return self._fail("a different face")
            self._ref_template = tpl
        if self._ref_rigid is None:
            self._ref_rigid = lm[RIGID_LANDMARKS].copy()
        pose = self._pose(lm)
        blinked = self._blinks.feed(now, lm)
        if len(self._base_pose) < 3:  # the starting pose: median of the first frames
            self._base_pose.append(pose)
            if len(self._base_pose) == 3:
                self._regions_at_start = self._regions(pose)
            return self._state()
        regions = self._regions(pose)
        want = self.prompts[self._step]
        wrong = (regions - {want}) - self._regions_at_start
        if wrong:
            return self._fail(f"wrong response: '{sorted(p.value for p in wrong)[0]}' while asked to '{want.value}'")
        if want is Prompt.BLINK:
            ok = blinked
        else:
            ok = want in regions
        if ok:
            self._step += 1
            if self._step == len(self.prompts):
                self._done, self._passed = True, True
                return self._state()
            self._step_start = now
            self._regions_at_start = regions
        return self._state()

    def run(self, observations) -> ChallengeState:
        """Feed observations until done or exhausted; returns the final state (a challenge
        that ran out of input before finishing is failed)."""
        for o in observations:
            st = self.feed_observation(o)
            if st.done:
                return st
        return self._state() if self._done else self._fail("input ended before the challenge was answered")




def prompted(frames, challenge: Challenge, show: Callable[[str], None]):
    """Yield ``frames`` unchanged, calling ``show(text)`` each time ``challenge``'s prompt
    changes (before the frame that may answer it): how a CLI or UI shows the prompts while
    :meth:`faceunlock.FaceUnlock.unlock` reads the frames."""
    last = None
    for item in frames:
        st = challenge.state
        if not st.done and st.prompt is not last:
            last = st.prompt
            show(st.prompt.value)
        yield item
