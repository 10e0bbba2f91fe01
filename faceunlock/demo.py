"""The bundled demo: enrol a public-domain portrait, then try a genuine and an impostor face.

Runs with no camera and no display. The portraits ship in ``faceunlock/data``:
``astronaut.jpg`` (Eileen Collins, NASA, public domain; via scikit-image) and
``grace_hopper.jpg`` (US Navy, public domain; via matplotlib).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from .embed import similarity
from .engine import FaceEngine
from .image import load_image

DATA = Path(__file__).resolve().parent / "data"


def data_image(name: str) -> np.ndarray:
    """A bundled portrait as (H, W, 3) uint8 RGB."""
    return load_image(DATA / f"{name}.jpg")


def new_view(image: np.ndarray, angle_deg: float, scale: float, gain: float) -> np.ndarray:
    """The same photo seen again: rotated, rescaled and re-lit (a stand-in for a new frame)."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle_deg, scale)
    out = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    return np.clip(out.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def run(engine: FaceEngine | None = None, say: Callable[[str], None] = print) -> int:
    """Enrol the astronaut, then unlock with a new view of her and with Grace Hopper.

    Returns 0 when the owner matched and the impostor was rejected, 1 otherwise."""
    engine = engine or FaceEngine(threads=1)
    threshold = engine.threshold
    owner = data_image("astronaut")
    t0 = time.perf_counter()
    enrolled = [engine.template(new_view(owner, a, s, 1.0)) for a, s in ((0, 1.0), (-6, 0.95), (6, 1.05))]
    say(f"enrolled 'astronaut' from 3 views of the bundled portrait in {(time.perf_counter() - t0) * 1000:.0f} ms "
        f"(threshold {threshold:.4f})")
    ok = True
    for label, probe, expect in (
        ("owner, new view (rotated 12°, 90 % size, darker)", new_view(owner, 12, 0.9, 0.8), True),
        ("impostor (Grace Hopper)", data_image("grace_hopper"), False),
    ):
        t1 = time.perf_counter()
        t = engine.template(probe)
        score = max(similarity(t, e) for e in enrolled)
        ms = (time.perf_counter() - t1) * 1000
        granted = score >= threshold
        say(f"{label}: score {score:.4f} -> {'GRANTED' if granted else 'DENIED'} ({ms:.0f} ms)")
        ok &= granted == expect
    say("demo " + ("passed: owner matched, impostor rejected" if ok else "FAILED"))
    return 0 if ok else 1
