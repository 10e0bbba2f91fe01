"""The bundled demo: a simulated camera shows the owner, a printed photo, and an impostor.

Runs with no camera and no display (text), or in an OpenCV window when one can be shown.
The portraits ship in ``faceunlock/data``: ``astronaut.jpg`` (Eileen Collins, NASA, public
domain; via scikit-image) and ``grace_hopper.jpg`` (US Navy, public domain; via matplotlib).

The simulated camera (``faceunlock.synth``) renders a portrait's own face mesh as a
moving 3D head (a live owner: real parallax), or the portrait as a flat printed sheet
moved in front of the camera (a printed-photo attack). The scenes:

1. enrol the astronaut from a rendered head sweep;
2. the astronaut, live, from a different sweep      → GRANTED;
3. a printed photo of the astronaut, moved around   → DENIED (liveness);
4. Grace Hopper, live                               → DENIED (no match).

``run()`` returns 0 only when all three outcomes are as expected.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from .engine import FaceEngine
from .image import load_image

DATA = Path(__file__).resolve().parent / "data"
FPS = 30.0
CLIP_FRAMES = 30  # 1 s of simulated video per scene


def data_image(name: str) -> np.ndarray:
    """A bundled portrait as (H, W, 3) uint8 RGB."""
    return load_image(DATA / f"{name}.jpg")


def new_view(image: np.ndarray, angle_deg: float, scale: float, gain: float) -> np.ndarray:
    """The same photo seen again: rotated, rescaled and re-lit (a stand-in for a new frame)."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle_deg, scale)
    out = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    return np.clip(out.astype(np.float32) * gain, 0, 255).astype(np.uint8)


@dataclass
class Scene:
    title: str
    frames: list[np.ndarray]
    expect: str  # "granted" | "liveness" | "no_match"


@dataclass
class Outcome:
    granted: bool
    reason: str
    detail: str
    score: float | None
    liveness_score: float | None
    ms: float


class SimulatedCamera:
    """Frames of the bundled portraits, rendered by :mod:`faceunlock.synth`."""

    def __init__(self, engine: FaceEngine, frames: int = CLIP_FRAMES) -> None:
        from . import synth

        self.synth = synth
        self.engine = engine
        self.n = frames

    def _landmarks(self, image: np.ndarray) -> np.ndarray:
        faces = self.engine.detect(image)
        if not faces:
            raise RuntimeError("the bundled portrait shows no face")
        return faces[0].landmarks

    def live(self, name: str, *, yaw_deg: float = 15.0, pitch_deg: float = 8.0, phase: float = 0.0,
             n: int | None = None) -> list[np.ndarray]:
        img = data_image(name)
        poses = self.synth.head_trajectory(n or self.n, yaw_deg, pitch_deg, phase)
        return self.synth.render_head_motion(img, self._landmarks(img), poses=poses)

    def answering(self, name: str, prompts) -> list[np.ndarray]:
        """The portrait's head answering challenge ``prompts`` (turn left/right ±25° yaw,
        look up 18° pitch; 0.4 s frontal, then per prompt 0.6 s there, 0.3 s held, 0.6 s
        back). Blinks cannot be rendered: the demo's challenges use head moves only."""
        from .liveness import Prompt

        target = {Prompt.TURN_LEFT: (25.0, 0.0), Prompt.TURN_RIGHT: (-25.0, 0.0), Prompt.LOOK_UP: (0.0, 18.0)}
        ramp = np.linspace(0.0, 1.0, round(0.6 * FPS))
        poses = [(0.0, 0.0)] * round(0.4 * FPS)
        for p in prompts:
            ty, tp = target[p]
            poses += [(ty * a, tp * a) for a in ramp] + [(ty, tp)] * round(0.3 * FPS)
            poses += [(ty * (1 - a), tp * (1 - a)) for a in ramp]
        img = data_image(name)
        return self.synth.render_head_motion(img, self._landmarks(img), poses=np.array(poses))

    def printed_photo(self, name: str) -> list[np.ndarray]:
        """A printed photo moved by hand: the evaluation's print generator (paper margin,
        3D sheet motion, blur, noise, JPEG; fixed seed). A clean digital warp of the photo
        would not do: without print or screen texture it is what a virtual camera injects,
        which the texture check does not claim to stop (docs/LIVENESS.md). What is printed is
        the owner as this simulated camera shows her (a frontal frame of the rendered head):
        the renderer's perspective changes her proportions, so a print of the original
        portrait would not match her enrolment under the default embedder (0.69 < 0.7579)."""
        from .evaluation import attacks

        still = self.live(name, yaw_deg=0.0, pitch_deg=0.0, n=1)[0]
        return attacks.print_attack(still, np.random.default_rng(1), self.n)


class Demo:
    def __init__(self, engine: FaceEngine, store, say: Callable[[str], None], window: str | None) -> None:
        from .policy import Policy
        from .unlock import FaceUnlock

        self.say, self.window = say, window
        self.engine = engine
        # The passive check needs the whole clip: let an attempt read all of it.
        policy = Policy(max_frames=CLIP_FRAMES, timeout_s=30.0)
        self.fu = FaceUnlock(store, engine=engine, policy=policy, liveness=True)

    def attempt(self, user: str, frames: list[np.ndarray], challenge=None) -> Outcome:
        """One unlock attempt on ``frames`` (RGB, timed at :data:`FPS`), liveness on."""
        t0 = time.perf_counter()
        live_score = None
        r = self.fu.unlock(user, [(i / FPS, f) for i, f in enumerate(frames)], challenge=challenge)
        reason = r.reason.value
        verdict = getattr(r, "liveness", None)
        detail = reason.replace("_", " ")
        if challenge is not None:
            st = challenge.state
            detail += f"; challenge {'passed' if st.passed else 'failed: ' + str(st.reason or 'not answered')}"
            if verdict is not None:
                live_score = float(verdict.score)
                detail += f"; liveness: {verdict.reason}"
            return Outcome(r.granted, reason, detail, r.score, live_score, _ms(t0))
        if verdict is not None:
            live_score = float(verdict.score)
            detail = verdict.reason if not verdict.live else f"{detail}; liveness: {verdict.reason}"
        return Outcome(r.granted, reason, str(detail), r.score, live_score, _ms(t0))

    def show(self, frames: list[np.ndarray], lines: list[str]) -> None:
        if self.window is None:
            return
        for f in frames:
            bgr = annotate(self.engine, f, lines)
            cv2.imshow(self.window, bgr)
            if cv2.waitKey(int(1000 / FPS)) & 0xFF in (27, ord("q")):
                raise KeyboardInterrupt
        cv2.waitKey(800)


def annotate(engine: FaceEngine, frame: np.ndarray, lines: list[str]) -> np.ndarray:
    """A BGR copy of ``frame`` with the face box, the mesh landmarks and text lines."""
    bgr = np.ascontiguousarray(frame[:, :, ::-1])
    for face in engine.detect(frame)[:1]:
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        cv2.rectangle(bgr, (x0, y0), (x1, y1), (0, 220, 0), 2)
        for x, y in face.landmarks[::4, :2]:
            cv2.circle(bgr, (int(x), int(y)), 1, (255, 200, 0), -1)
    for i, text in enumerate(lines):
        org = (10, 24 + 24 * i)
        cv2.putText(bgr, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(bgr, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return bgr


def _note(text: str) -> None:
    try:
        print(f"faceunlock: note: {text}", file=sys.stderr, flush=True)
    except Exception:
        pass


def _gui_problem() -> str | None:
    """Why no OpenCV window can be shown here, or None when one can. Checked before
    OpenCV's GUI (highgui) is touched: without a display a Qt/GTK build of OpenCV aborts
    the whole process (SIGABRT) instead of raising."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display ($DISPLAY and $WAYLAND_DISPLAY are unset)"
    gui = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.M)
    if gui is None or gui.group(1).upper() == "NONE":
        return "this OpenCV has no GUI (opencv-python-headless); pip install opencv-python for a window"
    # Creating a window can abort the process (e.g. an unreachable X server): try it in a
    # throwaway child first.
    probe = "import cv2; cv2.namedWindow('probe'); cv2.waitKey(1); cv2.destroyAllWindows()"
    try:
        r = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot test the display ({exc})"
    if r.returncode != 0:
        return "OpenCV cannot open a window on this display (probe exit code {})".format(r.returncode)
    return None


def _open_window(display: bool | None, note: Callable[[str], None] = _note) -> str | None:
    """A window name when a window can be shown, else None (text only).

    ``display`` False: never; None: when one can be shown; True: asked for — when it
    cannot be shown, ``note`` says why and the demo falls back to text."""
    if display is False:
        return None
    problem = _gui_problem()
    if problem is not None:
        if display:
            note(f"--display: {problem}; showing text only")
        return None
    try:
        cv2.namedWindow("faceunlock demo", cv2.WINDOW_AUTOSIZE)
        return "faceunlock demo"
    except cv2.error as exc:
        if display:
            note(f"--display: OpenCV cannot open a window ({exc}); showing text only")
        return None


def run(engine: FaceEngine | None = None, say: Callable[[str], None] = print, *, display: bool | None = None,
        challenge: bool = False) -> int:
    """The three scenes; returns 0 when the owner was granted, the printed photo denied by
    liveness and the impostor denied as no match, 1 otherwise."""
    from .store import TemplateStore

    t_start = time.perf_counter()
    engine = engine or FaceEngine(threads=1)
    window = _open_window(display)
    say(f"faceunlock demo: simulated camera ({CLIP_FRAMES} frames = {CLIP_FRAMES / FPS:.0f} s per scene), "
        f"{'window' if window else 'text only (no display)'}; threshold {engine.threshold:.4f}")
    cam = SimulatedCamera(engine)
    with tempfile.TemporaryDirectory(prefix="faceunlock-demo-") as d:
        store = TemplateStore(Path(d) / "demo.fus", key_file=Path(d) / "demo.key")
        demo = Demo(engine, store, say, window)
        t0 = time.perf_counter()
        enrol_frames = cam.live("astronaut", yaw_deg=20.0, pitch_deg=12.0, n=24)
        demo.show(enrol_frames, ["Enrolling the owner: turn your head slowly"])
        report = demo.fu.enroll("astronaut", enrol_frames)
        say(f"[1/4] enrolled the owner (astronaut, a rendered 3D head sweep): {report.templates} templates from "
            f"{report.frames_accepted}/{report.frames_seen} frames, {_ms(t0):.0f} ms")
        scenes = [
            Scene("owner, live (her face mesh turning in 3D)", cam.live("astronaut", phase=1.3), "granted"),
            Scene("printed photo of the owner, moved in front of the camera", cam.printed_photo("astronaut"),
                  "liveness"),
            Scene("impostor, live (Grace Hopper)", cam.live("grace_hopper"), "no_match"),
        ]
        challenges: list = [None] * len(scenes)
        if challenge:  # step-up: random head-move prompts (secrets.SystemRandom), 2 per attempt
            import secrets

            from .liveness import Challenge, Prompt

            rng = secrets.SystemRandom()
            moves = [Prompt.TURN_LEFT, Prompt.TURN_RIGHT, Prompt.LOOK_UP]
            thr = demo.fu.liveness.identity_threshold if demo.fu.liveness else 0.0
            challenges = [Challenge(rng.sample(moves, 2), identity_threshold=thr) for _ in scenes]
            p = challenges[0].prompts
            scenes[0] = Scene(f"owner, live, answering the challenge ({', then '.join(x.value for x in p)})",
                              cam.answering("astronaut", p), "granted")
        ok = True
        for i, s in enumerate(scenes, start=2):
            demo.show(s.frames[: CLIP_FRAMES // 2], [s.title, "turn your head slowly"])
            o = demo.attempt("astronaut", s.frames, challenges[i - 2])
            verdict = "GRANTED" if o.granted else f"DENIED ({'liveness' if o.reason == 'liveness_failed' else o.reason.replace('_', ' ')})"
            score = "-" if o.score is None else f"{o.score:.4f}"
            live = "-" if o.liveness_score is None else f"{o.liveness_score:.3f}"
            say(f"[{i}/4] {s.title}: {verdict} — match score {score}, liveness score {live}, {o.detail}; "
                f"{o.ms:.0f} ms")
            demo.show(s.frames[-1:], [s.title, verdict, f"score {score}  liveness {live}"])
            got = "granted" if o.granted else ("liveness" if o.reason == "liveness_failed" else o.reason)
            if got != s.expect:
                ok = False
                say(f"      expected {s.expect}, got {got}")
    if window:
        cv2.destroyAllWindows()
    say(f"demo {'passed: owner granted, printed photo denied (liveness), impostor denied (no match)' if ok else 'FAILED'}"
        f" in {time.perf_counter() - t_start:.1f} s")
    return 0 if ok else 1


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0
