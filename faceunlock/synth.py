"""Synthetic camera views of a portrait: a moving 3D face, or the portrait as a moving sheet.

For demos and liveness evaluation without a camera. Pure numpy/OpenCV; the caller supplies
the face-mesh landmarks (e.g. ``FaceEngine().detect(image)[0].landmarks``), so this module
does not import the engine.

* :func:`render_head_motion` — the portrait's own face mesh (468 landmarks with their
  depth), texture-mapped triangle by triangle, rotated in 3D about the neck and projected
  with a pinhole camera: a simulated *live* head (it has real parallax, so the passive
  liveness check should accept it).
* :func:`render_planar_attack` — the portrait as a flat (or bent) sheet moved in 3D in
  front of a background and projected the same way: a simulated *printed photo* (the
  passive check must reject it).

Images are (H, W, 3) uint8 RGB. Angles in degrees; yaw > 0 turns the nose towards the
image's right, pitch > 0 turns it up (the convention of :class:`faceunlock.Face`).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["delaunay", "warp_triangles", "rotation", "project", "head_trajectory",
           "render_head_motion", "render_planar_attack", "render_sheet"]


def delaunay(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """(M, 3) vertex indices of a Delaunay triangulation of (N, 2) pixel ``points``."""
    pts = np.asarray(points, np.float64)
    lo = pts.min(0) - 2
    hi = pts.max(0) + 2
    sub = cv2.Subdiv2D((int(math.floor(lo[0])), int(math.floor(lo[1])),
                        int(math.ceil(hi[0] - lo[0])) + 2, int(math.ceil(hi[1] - lo[1])) + 2))
    lookup = {}
    for i, (x, y) in enumerate(pts):
        sub.insert((float(x), float(y)))
        lookup[(round(float(x), 3), round(float(y), 3))] = i
    tris = []
    for t in sub.getTriangleList():
        ids = []
        for k in range(3):
            key = (round(float(t[2 * k]), 3), round(float(t[2 * k + 1]), 3))
            if key not in lookup:
                break
            ids.append(lookup[key])
        if len(ids) == 3:
            tris.append(ids)
    return np.asarray(tris, np.int64).reshape(-1, 3)


def warp_triangles(src: np.ndarray, src_pts: np.ndarray, dst_pts: np.ndarray, tris: np.ndarray,
                   out: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """Piecewise-affine warp: copy each triangle of ``src`` (at ``src_pts``) to ``dst_pts``
    in ``out`` (modified in place and returned), in ``order`` (painter's: far first)."""
    h, w = out.shape[:2]
    for ti in (order if order is not None else range(len(tris))):
        a = src_pts[tris[ti]].astype(np.float32)
        b = dst_pts[tris[ti]].astype(np.float32)
        e1, e2 = b[1] - b[0], b[2] - b[0]
        if abs(float(e1[0] * e2[1] - e1[1] * e2[0])) < 0.5:
            continue
        x0, y0 = np.floor(b.min(0)).astype(int)
        x1, y1 = np.ceil(b.max(0)).astype(int) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            continue
        m = cv2.getAffineTransform(a, b - np.float32([x0, y0]))
        patch = cv2.warpAffine(src, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT)
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillConvexPoly(mask, np.round((b - [x0, y0]) * 16).astype(np.int32), 1, cv2.LINE_AA, 4)
        region = out[y0:y1, x0:x1]
        region[mask > 0] = patch[mask > 0]
    return out


def rotation(yaw_deg: float, pitch_deg: float, roll_deg: float = 0.0) -> np.ndarray:
    """3×3 rotation for image-frame points (x right, y down, z away from the camera)."""
    y, p, r = (math.radians(v) for v in (yaw_deg, pitch_deg, roll_deg))
    # yaw about the vertical axis: the nose (z < 0) goes towards +x for yaw > 0
    ry = np.array([[math.cos(y), 0, -math.sin(y)], [0, 1, 0], [math.sin(y), 0, math.cos(y)]])
    # pitch about the horizontal axis: the nose goes up (-y) for pitch > 0
    rx = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def project(points: np.ndarray, centre: tuple[float, float], distance_px: float) -> np.ndarray:
    """Pinhole projection of (N, 3) points given relative to the image ``centre`` (x, y)
    with z away from the camera; the plane z = 0 is at ``distance_px`` and keeps its scale."""
    z = distance_px + points[:, 2]
    return np.c_[centre[0] + points[:, 0] * distance_px / z, centre[1] + points[:, 1] * distance_px / z]


def head_trajectory(n_frames: int, yaw_deg: float = 15.0, pitch_deg: float = 10.0,
                    phase: float = 0.0) -> np.ndarray:
    """(n, 2) yaw, pitch per frame: a Lissajous sweep (one yaw cycle, half a pitch cycle)
    starting frontal."""
    t = np.linspace(0.0, 1.0, n_frames)
    return np.c_[yaw_deg * np.sin(2 * np.pi * t + phase), pitch_deg * np.sin(np.pi * t + phase)]


def render_head_motion(image: np.ndarray, landmarks: np.ndarray, n_frames: int = 60, *,
                       yaw_deg: float = 15.0, pitch_deg: float = 10.0,
                       poses: np.ndarray | None = None, distance: float = 3.0) -> list[np.ndarray]:
    """The portrait's face as a moving 3D head: ``n_frames`` RGB frames.

    Args:
        image: (H, W, 3) uint8 RGB portrait.
        landmarks: (468, 3) face-mesh landmarks of the face in ``image`` (pixels, z depth).
        n_frames: frames to render (e.g. 60 = 2 s at 30 fps).
        yaw_deg, pitch_deg: amplitudes of the sweep (see :func:`head_trajectory`).
        poses: optional (n_frames, 2) yaw, pitch per frame, overriding the sweep.
        distance: camera distance in face widths (perspective strength; 3 ≈ a phone at
            arm's length).

    The face mesh and a ring around it (hair, neck) turn about a pivot behind the face; the
    image border stays put and the background in between is stretched.
    """
    img = np.ascontiguousarray(image)
    h, w = img.shape[:2]
    lm = np.asarray(landmarks, np.float64)
    lo, hi = lm[:, :2].min(0), lm[:, :2].max(0)
    fc = (lo + hi) / 2
    fw = float(hi[0] - lo[0])
    z_back = float(lm[:, 2].max())
    ring_n = 24
    ang = np.linspace(0, 2 * np.pi, ring_n, endpoint=False)
    ring = np.c_[fc[0] + 0.8 * (hi[0] - lo[0]) * np.cos(ang), fc[1] + 0.75 * (hi[1] - lo[1]) * np.sin(ang),
                 np.full(ring_n, z_back)]
    border = [(x, y) for x in np.linspace(0, w - 1, 6) for y in (0, h - 1)]
    border += [(x, y) for y in np.linspace(0, h - 1, 6)[1:-1] for x in (0, w - 1)]
    border = np.c_[np.asarray(border, np.float64), np.full(len(border), z_back)]
    pts3 = np.r_[lm, ring, border]
    moving = np.r_[np.ones(len(lm) + ring_n, bool), np.zeros(len(border), bool)]
    src2 = pts3[:, :2]
    tris = delaunay(src2, w, h)
    pivot = np.array([fc[0], fc[1], z_back + 0.25 * fw])
    dist_px = distance * fw
    if poses is None:
        poses = head_trajectory(n_frames, yaw_deg, pitch_deg)
    frames = []
    for yaw, pitch in np.asarray(poses, np.float64):
        rel = pts3 - pivot
        rot = rel.copy()
        rot[moving] = rel[moving] @ rotation(yaw, pitch).T
        cam = rot + pivot - [w / 2, h / 2, 0]
        # project relative to the zero-rotation depth so the frontal frame is unchanged
        cam[:, 2] -= z_back
        dst = project(cam, (w / 2, h / 2), dist_px)
        depth = cam[tris].mean(1)[:, 2]
        order = np.argsort(-depth)
        out = img.copy()
        frames.append(warp_triangles(img, src2, dst, tris, out, order))
    return frames


def _grid(x0: float, y0: float, x1: float, y1: float, n: int) -> np.ndarray:
    xs, ys = np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n))
    return np.c_[xs.ravel(), ys.ravel()]


def _grid_tris(n: int) -> np.ndarray:
    t = []
    for r in range(n - 1):
        for c in range(n - 1):
            i = r * n + c
            t += [[i, i + 1, i + n], [i + 1, i + n + 1, i + n]]
    return np.asarray(t, np.int64)


def render_sheet(sheet: np.ndarray, background: np.ndarray, *, yaw_deg: float, pitch_deg: float,
                 roll_deg: float = 0.0, centre: tuple[float, float] | None = None, scale: float = 1.0,
                 bend: float = 0.0, distance: float = 2.5, grid: int = 16) -> np.ndarray:
    """One frame: the RGB ``sheet`` (a print or a screen's content) as a surface in 3D in
    front of ``background`` (its size is the frame's size).

    The sheet's width in the frame is ``scale`` × its pixel width at zero rotation; it is
    centred at ``centre`` (frame pixels; default the frame centre). ``bend`` > 0 curls it
    about a vertical axis into a cylinder whose sag at the sides is ``bend`` × the sheet's
    width (a hand-held print). ``distance`` is the camera distance in sheet widths.
    """
    h, w = background.shape[:2]
    sh, sw = sheet.shape[:2]
    src = _grid(0, 0, sw - 1, sh - 1, grid)
    x = (src[:, 0] - (sw - 1) / 2) * scale
    y = (src[:, 1] - (sh - 1) / 2) * scale
    half = sw * scale / 2
    if bend > 0:
        sag = bend * 2 * half
        radius = (half**2 + sag**2) / (2 * sag)
        theta = x / radius  # arc length preserved: the paper does not stretch
        z = radius * (1 - np.cos(theta))
        x = radius * np.sin(theta)
        z = z - z.mean()
    else:
        z = np.zeros_like(x)
    p = np.c_[x, y, z] @ rotation(yaw_deg, pitch_deg, roll_deg).T
    c = centre if centre is not None else (w / 2, h / 2)
    dst = project(p, c, distance * 2 * half)
    tris = _grid_tris(grid)
    depth = p[tris].mean(1)[:, 2]
    return warp_triangles(np.ascontiguousarray(sheet), src, dst, tris, background.copy(), np.argsort(-depth))


def render_planar_attack(image: np.ndarray, n_frames: int = 60, *, yaw_deg: float = 15.0,
                         pitch_deg: float = 10.0, poses: np.ndarray | None = None, bend: float = 0.0,
                         background: np.ndarray | None = None, scale: float = 0.8,
                         distance: float = 2.5) -> list[np.ndarray]:
    """The portrait as a printed sheet moved in 3D (a printed-photo attack): frames of the
    size of ``image`` (or of ``background``), the sheet swept like :func:`render_head_motion`
    (same ``poses`` convention) at ``scale`` of its size, optionally ``bend``-curled.

    Default background: a dim blurred copy of the portrait itself, so the frame has the
    same size and colours while the sheet's edges stay visible.
    """
    img = np.ascontiguousarray(image)
    if background is None:
        background = (cv2.GaussianBlur(img, (0, 0), 12) * 0.6).astype(np.uint8)
    if poses is None:
        poses = head_trajectory(n_frames, yaw_deg, pitch_deg)
    return [render_sheet(img, background, yaw_deg=y, pitch_deg=p, scale=scale, bend=bend, distance=distance)
            for y, p in np.asarray(poses, np.float64)]
