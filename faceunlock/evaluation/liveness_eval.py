"""eval-liveness: APCER per attack type and BPCER (ISO/IEC 30107-3) on generated attacks
and the dev videos.

Bona fide: the real videos (``liveportrait_driving/*.mp4``) cut into 3 s windows (stride
``stride_s``; windows overlap when the stride is shorter), each played at ~15 fps (every
second frame); plus, reported separately, each source portrait rendered as a moving 3D
face (:func:`faceunlock.synth.render_head_motion`).
Attacks: from every source portrait (the bundled ones, the live still, LFW dev images) a
flat print, a bent print and a screen attack, ``per_source`` each, plus a flat print held
nearly still (≤ 3° yaw, ≤ 2° pitch; its own random stream, so the other attacks do not
change); and every real video replayed on a hand-held screen, judged by the passive check
and by random challenges.

Splits (to keep threshold choice honest): the *tuning* split is the windows of d18 and d19,
their replays, and the even-indexed source portraits in name order; the *held-out* split is
d20, its replay and the odd-indexed sources. The report gives every row on all data and on
each split.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..demo import data_image
from ..errors import FaceUnlockError
from ..image import load_image
from ..liveness import Liveness, Observation
from ..liveness.challenge import Challenge
from ..synth import render_head_motion
from . import attacks as A

__all__ = ["Row", "LivenessReport", "evaluate", "read_video"]

CLIP_S = 3.0
ATTACK_FPS = 15.0
HELD_OUT_VIDEO = "d20"


@dataclass
class Row:
    """One line of the report: ``errors`` of ``total`` presentations misclassified."""

    kind: str  # "APCER" or "BPCER"
    name: str
    errors: int
    total: int
    scores: list[float] = field(default_factory=list, repr=False)
    splits: dict = field(default_factory=dict, repr=False)  # split → [errors, total]

    @property
    def rate(self) -> float:
        return self.errors / self.total if self.total else float("nan")

    def line(self) -> str:
        s = np.array(self.scores) if self.scores else np.zeros(1)
        return (f"| {self.kind} | {self.name} | {self.errors}/{self.total} | {100 * self.rate:.1f} % | "
                f"{np.median(s):.4f} [{s.min():.4f}, {s.max():.4f}] |")


@dataclass
class LivenessReport:
    rows: list[Row]
    threshold: float
    seconds: float
    notes: list[str]

    def text(self) -> str:
        out = [f"passive threshold {self.threshold:.4f} (2-D nose parallax per foreshortening); {self.seconds:.0f} s",
               "| metric | presentation | errors | rate | score median [min, max] |", "|---|---|---|---|---|"]
        out += [r.line() for r in self.rows]
        for sp in ("tune", "held-out"):
            out += ["", f"{sp} split:", "| metric | presentation | errors | rate |", "|---|---|---|---|"]
            for r in self.rows:
                e, t = r.splits.get(sp, (0, 0))
                if t:
                    out.append(f"| {r.kind} | {r.name} | {e}/{t} | {100 * e / t:.1f} % |")
        return "\n".join(out + [""] + self.notes)

    def as_dict(self) -> dict:
        return {"threshold": self.threshold, "seconds": self.seconds, "notes": self.notes,
                "rows": [{"kind": r.kind, "name": r.name, "errors": r.errors, "total": r.total, "rate": r.rate,
                          "splits": {k: list(v) for k, v in r.splits.items()}}
                         for r in self.rows]}


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    """All frames (RGB) of a video and its frame rate."""
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f[:, :, ::-1].copy())
    cap.release()
    if not frames:
        raise FaceUnlockError(f"cannot read any frame from {path}")
    return frames, float(fps)


def _sources(root: Path, lfw: int) -> list[tuple[str, np.ndarray]]:
    out = [("astronaut", data_image("astronaut")), ("grace_hopper", data_image("grace_hopper"))]
    live = root / "silent_face_antispoofing_samples" / "image_T1.jpg"
    if live.is_file():
        out.append(("live_still_T1", np.ascontiguousarray(np.rot90(load_image(live), -1))))
    lfw_root = root.parent / "lfw_dev" / "images"
    if lfw > 0 and lfw_root.is_dir():
        people = sorted(p for p in lfw_root.iterdir() if p.is_dir())
        step = max(1, len(people) // lfw)
        for p in people[::step][:lfw]:
            img = sorted(p.glob("*.jpg"))[0]
            out.append((f"lfw/{img.stem}", load_image(img)))
    return out


def _still_print(portrait: np.ndarray, rng: np.random.Generator, n: int, size: int = 480) -> list[np.ndarray]:
    """A flat print held nearly still (≤ 3° yaw, ≤ 2° pitch, hand drift)."""
    sheet = A.fit_portrait(portrait, 400)
    pad = round(0.04 * sheet.shape[1])
    sheet = cv2.copyMakeBorder(sheet, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(235, 235, 230))
    return A._sheet_clip(sheet, rng, n, size, 0.0, 3.0, 2.0, glare=False)


def _observations(live: Liveness, frames: list[np.ndarray], fps: float) -> list[Observation]:
    return [live.observe(f, i / fps) for i, f in enumerate(frames)]


def _passive(live: Liveness, obs: list[Observation], fps: float):
    lms = [o.landmarks for o in obs if o.landmarks is not None]
    tpls = [o.template for o in obs if o.template is not None]
    return live.judge(lms, fps, tpls or None, [o.faces for o in obs])


def evaluate(live: Liveness, root: Path, *, lfw: int = 12, per_source: int = 1, stride_s: float = 0.5,
             challenges: int = 20, seed: int = 0, say=lambda s: None) -> LivenessReport:
    """Run the whole evaluation (see the module docstring); ``say`` gets progress lines."""
    t0 = time.perf_counter()
    root = Path(root)
    vids = sorted((root / "liveportrait_driving").glob("*.mp4"))
    if not vids:
        raise FaceUnlockError(f"no dev videos in {root / 'liveportrait_driving'}: pass the video_liveness folder")
    rng = np.random.default_rng(seed)
    rows: dict[str, Row] = {}

    def add(kind: str, name: str, error: bool, score: float, split: str) -> None:
        r = rows.setdefault(name, Row(kind, name, 0, 0))
        r.errors += int(error)
        r.total += 1
        r.scores.append(score)
        sp = r.splits.setdefault(split, [0, 0])
        sp[0] += int(error)
        sp[1] += 1

    def video_split(stem: str) -> str:
        return "held-out" if stem == HELD_OUT_VIDEO else "tune"

    # bona fide: real video windows at ~15 fps
    videos = []
    for v in vids:
        frames, fps = read_video(v)
        step = max(1, round(fps / ATTACK_FPS))
        frames, fps = frames[::step], fps / step
        videos.append((v.stem, frames, fps))
        obs = _observations(live, frames, fps)
        win, hop = round(CLIP_S * fps), max(1, round(stride_s * fps))
        for s in range(0, len(obs) - win + 1, hop):
            r = _passive(live, obs[s:s + win], fps)
            add("BPCER", "real video, 3 s windows", not r.live, r.score, video_split(v.stem))
        say(f"bona fide {v.stem}: done")
    n = round(CLIP_S * ATTACK_FPS)
    sources = _sources(root, lfw)
    names = sorted(n for n, _ in sources)
    still_rng = np.random.default_rng(seed + 1)
    for name, img in sources:
        split = "tune" if names.index(name) % 2 == 0 else "held-out"
        faces = live.engine.detect(img)
        if not faces:
            say(f"{name}: no face, skipped")
            continue
        fr = render_head_motion(img, faces[0].landmarks, n, yaw_deg=rng.uniform(8, 20), pitch_deg=rng.uniform(4, 12))
        r = _passive(live, _observations(live, fr, ATTACK_FPS), ATTACK_FPS)
        add("BPCER", "portrait rendered as a moving 3D face (synthetic)", not r.live, r.score, split)
        for _ in range(per_source):
            for kind, clip in (("print", A.print_attack(img, rng, n)), ("bent_print", A.print_attack(img, rng, n, bent=True)),
                               ("screen", A.screen_attack(img, rng, n))):
                r = _passive(live, _observations(live, clip, ATTACK_FPS), ATTACK_FPS)
                add("APCER", f"{kind} (passive)", r.live, r.score, split)
            still = _still_print(img, still_rng, n)
            r = _passive(live, _observations(live, still, ATTACK_FPS), ATTACK_FPS)
            add("APCER", "print held nearly still (passive)", r.live, r.score, split)
        say(f"{name}: done")
    # replays: passive on 3 s windows, and random challenges over the whole replay
    crng = random.Random(seed)
    for stem, frames, fps in videos:
        clip = A.replay_attack(frames, rng)
        obs = _observations(live, clip, fps)
        win = round(CLIP_S * fps)
        for s in range(0, len(obs) - win + 1, max(1, round(fps))):
            r = _passive(live, obs[s:s + win], fps)
            add("APCER", "replay (passive only)", r.live, r.score, video_split(stem))
        for _ in range(challenges):
            start = crng.randrange(0, max(1, len(obs) - round(2 * fps)))
            ch = Challenge.random(rng=crng, identity_threshold=live.identity_threshold,
                                  step_timeout_s=live.step_timeout_s)
            st = ch.run(obs[start:])
            add("APCER", "replay (challenge)", st.passed, float(st.step), video_split(stem))
        say(f"replay {stem}: done")
    order = ["real video, 3 s windows", "portrait rendered as a moving 3D face (synthetic)", "print (passive)",
             "bent_print (passive)", "screen (passive)", "print held nearly still (passive)", "replay (passive only)", "replay (challenge)"]
    notes = [f"sources for still attacks: {len(sources)} ({', '.join(n for n, _ in sources[:4])}, ...); "
             f"attack clips {CLIP_S:.0f} s at {ATTACK_FPS:.0f} fps; video windows {CLIP_S:.0f} s, stride {stride_s} s "
             "(overlapping), every 2nd frame; seed " + str(seed),
             "replay (challenge): score column = prompts answered before failing"]
    return LivenessReport([rows[k] for k in order if k in rows], live.threshold, time.perf_counter() - t0, notes)
