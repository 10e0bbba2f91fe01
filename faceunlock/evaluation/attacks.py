"""Presentation-attack generator: print, bent-print, screen and video-replay attacks.

Every attack is a list of (H, W, 3) uint8 RGB frames drawn with a seeded
``numpy.random.Generator`` (reproducible). Geometry comes from :mod:`faceunlock.synth`
(a sheet in 3D with perspective); on top:

* ``print``: a flat photo moved in 3D by hand (yaw up to ±25°, pitch up to ±15°, roll,
  translation), lighting change over time, blur, sensor noise, JPEG.
* ``bent_print``: the same on a sheet curled into a cylinder (sag 5–15 % of its width).
* ``screen``: the photo on a tablet/phone screen — dark bezel, gamma, moiré, a glare spot
  fixed in the room (so it slides over the screen), then the print degradations.
* ``replay``: frames of a real video shown on a hand-held screen (all screen effects).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..synth import head_trajectory, project, render_sheet, rotation

__all__ = ["ATTACK_TYPES", "background", "degrade", "screen_effects", "print_attack", "screen_attack",
           "replay_attack", "fit_portrait", "render_flat_sheet"]

ATTACK_TYPES = ("print", "bent_print", "screen", "replay")


def fit_portrait(image: np.ndarray, width: int) -> np.ndarray:
    """``image`` resized to ``width`` pixels wide (aspect kept)."""
    h, w = image.shape[:2]
    return cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA if w > width else cv2.INTER_CUBIC)


def background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A smooth random room-like background of (H, W) ``size``."""
    h, w = size
    small = rng.uniform(30, 200, (4, 4, 3)).astype(np.float32)
    bg = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    bg += rng.normal(0, 6, (h, w, 3)).astype(np.float32)
    return np.clip(bg, 0, 255).astype(np.uint8)


def degrade(frame: np.ndarray, rng: np.random.Generator, gain: float, blur: float, noise: float,
            jpeg: int) -> np.ndarray:
    """Camera effects: brightness ``gain``, Gaussian ``blur`` sigma (px), Gaussian ``noise``
    sigma (grey levels), JPEG ``jpeg`` quality."""
    f = frame.astype(np.float32) * gain
    if blur > 0.2:
        f = cv2.GaussianBlur(f, (0, 0), blur)
    f += rng.normal(0, noise, f.shape).astype(np.float32)
    f = np.clip(f, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", f[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(jpeg)])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy() if ok else f


def screen_effects(content: np.ndarray, rng: np.random.Generator, gamma: float, moire: float,
                   moire_period: float, moire_angle: float) -> np.ndarray:
    """What a screen does to an image: gamma, a moiré pattern of relative amplitude
    ``moire``, and a dark bezel of 6 % around it."""
    f = (content.astype(np.float32) / 255.0) ** gamma
    h, w = f.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = np.deg2rad(moire_angle)
    pattern = 1.0 + moire * np.sin(2 * np.pi * (xx * np.cos(a) + yy * np.sin(a)) / moire_period)
    f = np.clip(f * pattern[..., None] * 255.0, 0, 255).astype(np.uint8)
    pad = max(4, round(0.06 * max(h, w)))
    bezel = rng.uniform(5, 30)
    return cv2.copyMakeBorder(f, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(bezel, bezel, bezel))


def _glare(frame: np.ndarray, centre: tuple[float, float], radius: float, strength: float) -> np.ndarray:
    h, w = frame.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    g = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * radius**2)) * strength
    return np.clip(frame.astype(np.float32) + g[..., None], 0, 255).astype(np.uint8)


def render_flat_sheet(sheet: np.ndarray, background: np.ndarray, *, yaw_deg: float, pitch_deg: float,
                      roll_deg: float = 0.0, centre: tuple[float, float] | None = None, scale: float = 1.0,
                      distance: float = 2.5) -> np.ndarray:
    """:func:`faceunlock.synth.render_sheet` for a flat sheet (``bend`` 0), as one exact
    perspective warp instead of 2 × 16² affine triangles (same geometry and conventions;
    about 10× faster). A plane seen through a pinhole is a homography, so the four
    corners, rotated and projected as ``render_sheet`` does, fix it."""
    h, w = background.shape[:2]
    sh, sw = sheet.shape[:2]
    src = np.float32([[0, 0], [sw - 1, 0], [sw - 1, sh - 1], [0, sh - 1]])
    half = sw * scale / 2
    xyz = np.c_[(src[:, 0] - (sw - 1) / 2) * scale, (src[:, 1] - (sh - 1) / 2) * scale, np.zeros(4)]
    p = xyz @ rotation(yaw_deg, pitch_deg, roll_deg).T
    dst = project(p, centre if centre is not None else (w / 2, h / 2), distance * 2 * half).astype(np.float32)
    out = background.copy()
    cv2.warpPerspective(np.ascontiguousarray(sheet), cv2.getPerspectiveTransform(src, dst), (w, h), dst=out,
                        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
    return out


def _motion(rng: np.random.Generator, n: int, max_yaw: float, max_pitch: float) -> np.ndarray:
    poses = head_trajectory(n, rng.uniform(0.3, 1.0) * max_yaw, rng.uniform(0.3, 1.0) * max_pitch,
                            phase=rng.uniform(0, 2 * np.pi))
    return poses * rng.choice([-1, 1], size=2)


def _sheet_clip(sheet: np.ndarray, rng: np.random.Generator, n: int, size: int, bend: float,
                max_yaw: float, max_pitch: float, glare: bool) -> list[np.ndarray]:
    bg = background(rng, (size, size))
    poses = _motion(rng, n, max_yaw, max_pitch)
    roll = rng.uniform(-8, 8) * np.sin(np.linspace(0, np.pi, n) + rng.uniform(0, np.pi))
    shift = rng.uniform(-0.05, 0.05, (2,)) * size
    drift = rng.uniform(-0.04, 0.04, (2,)) * size
    scale = rng.uniform(0.75, 0.95) * size / sheet.shape[1]
    gains = np.linspace(rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.2), n)
    blur, noise, jpeg = rng.uniform(0, 1.5), rng.uniform(1, 5), int(rng.integers(50, 95))
    glare_c = rng.uniform(0.2, 0.8, 2) * size
    glare_r, glare_s = rng.uniform(0.08, 0.2) * size, rng.uniform(40, 120)
    dist = rng.uniform(1.8, 3.0)
    out = []
    for k, (yaw, pitch) in enumerate(poses):
        c = (size / 2 + shift[0] + drift[0] * k / n, size / 2 + shift[1] + drift[1] * k / n)
        if bend > 0:
            f = render_sheet(sheet, bg, yaw_deg=yaw, pitch_deg=pitch, roll_deg=roll[k], centre=c, scale=scale,
                             bend=bend, distance=dist)
        else:
            f = render_flat_sheet(sheet, bg, yaw_deg=yaw, pitch_deg=pitch, roll_deg=roll[k], centre=c, scale=scale,
                                  distance=dist)
        if glare:
            f = _glare(f, tuple(glare_c), glare_r, glare_s)
        out.append(degrade(f, rng, gains[k], blur, noise, jpeg))
    return out


def print_attack(portrait: np.ndarray, rng: np.random.Generator, n_frames: int = 45, size: int = 480,
                 bent: bool = False) -> list[np.ndarray]:
    """A printed photo (white margin) moved by hand in front of the camera; ``bent`` curls
    it. Frames are ``size``×``size``."""
    sheet = fit_portrait(portrait, 400)
    pad = round(0.04 * sheet.shape[1])
    sheet = cv2.copyMakeBorder(sheet, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(235, 235, 230))
    bend = rng.uniform(0.05, 0.15) if bent else 0.0
    return _sheet_clip(sheet, rng, n_frames, size, bend, 25.0, 15.0, glare=False)


def screen_attack(portrait: np.ndarray, rng: np.random.Generator, n_frames: int = 45,
                  size: int = 480) -> list[np.ndarray]:
    """The photo on a tablet/phone screen moved by hand (bezel, gamma, moiré, glare)."""
    content = screen_effects(fit_portrait(portrait, 400), rng, rng.uniform(0.7, 1.4), rng.uniform(0.03, 0.12),
                             rng.uniform(3, 9), rng.uniform(0, 180))
    return _sheet_clip(content, rng, n_frames, size, 0.0, 25.0, 15.0, glare=True)


def replay_attack(video: list[np.ndarray], rng: np.random.Generator, size: int = 480) -> list[np.ndarray]:
    """Each frame of a real ``video`` shown on a hand-held screen (small hand motion)."""
    n = len(video)
    gamma, moire = rng.uniform(0.7, 1.4), rng.uniform(0.03, 0.1)
    period, angle = rng.uniform(3, 9), rng.uniform(0, 180)
    bg = background(rng, (size, size))
    poses = _motion(rng, n, 6.0, 4.0)
    scale = rng.uniform(0.8, 0.95) * size / (400 * 1.12)
    glare_c = rng.uniform(0.2, 0.8, 2) * size
    glare_r, glare_s = rng.uniform(0.08, 0.2) * size, rng.uniform(30, 90)
    blur, noise, jpeg = rng.uniform(0, 1.2), rng.uniform(1, 4), int(rng.integers(60, 95))
    out = []
    for k, frame in enumerate(video):
        content = screen_effects(fit_portrait(frame, 400), rng, gamma, moire, period, angle)
        f = render_sheet(content, bg, yaw_deg=poses[k, 0], pitch_deg=poses[k, 1], scale=scale, distance=2.4, grid=6)
        f = _glare(f, tuple(glare_c), glare_r, glare_s)
        out.append(degrade(f, rng, 1.0, blur, noise, jpeg))
    return out
