"""From face-mesh landmarks to the face chip an embedder expects.

Two chip geometries (an :class:`~faceunlock.embed.EmbedderSpec` names one in its
``alignment`` field):

* ``"dlib-150"``: dlib's 150×150 chip (below);
* ``"insightface-112"``: insightface's 112×112 five-point template (eye centres, nose tip,
  mouth corners; see :data:`INSIGHTFACE_TEMPLATE_112`).

Pure numpy/OpenCV. Pixel convention: pixel centres at integer coordinates (OpenCV and
dlib). Images are (H, W, 3) uint8 RGB.

dlib's chip geometry (``get_face_chip(img, shape5, size=150, padding=0.25)``): five
template points (x, y in [0, 1]) in dlib's order — outer then inner corner of the eye on
the image's right, outer then inner corner of the eye on the image's left, base of the
nose — placed in the chip at ``(padding + p) / (1 + 2 padding) * size``. A least-squares
similarity transform maps the chip onto the image; dlib halves the image with a
[1 4 6 4 1]² / 256 pyramid while the source is more than twice the chip's size, then
samples bilinearly.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

__all__ = [
    "DLIB_TEMPLATE",
    "FivePointMap",
    "five_point_map",
    "similarity_transform",
    "chip_transform",
    "extract_chip",
    "ALIGNMENTS",
    "INSIGHTFACE_TEMPLATE_112",
    "insightface_map",
    "insightface_transform",
    "extract_chip_112",
    "aligned_chip",
    "INSIGHTFACE_MAPS",
]

_DLIB_UNIT = np.array(
    [
        (0.8595674595992, 0.2134981538014),
        (0.6460604764104, 0.2289674387677),
        (0.1205750620789, 0.2137274526848),
        (0.3340850613712, 0.2290642403242),
        (0.4901123135679, 0.6277975316475),
    ]
)
CHIP_SIZE = 150
CHIP_PADDING = 0.25


def dlib_template(size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """dlib's five template points in chip pixels, (5, 2)."""
    return (padding + _DLIB_UNIT) / (2 * padding + 1) * size


DLIB_TEMPLATE = dlib_template()

# Face-mesh indices nearest to dlib's five points (image-right eye outer/inner,
# image-left eye outer/inner, nose base). Used when no fitted map is shipped.
NEAREST_MESH = (263, 362, 33, 133, 2)

_MAP_FILE = Path(__file__).resolve().parent / "models" / "five_point_map.json"


@dataclass(frozen=True)
class FivePointMap:
    """Each of dlib's five points as an affine combination of face-mesh landmarks.

    ``indices[k]`` are mesh landmark indices and ``weights[k]`` their weights (summing
    to 1), so the map commutes with any similarity transform of the face.
    """

    indices: tuple[tuple[int, ...], ...]
    weights: tuple[tuple[float, ...], ...]
    name: str = "nearest"

    def apply(self, landmarks: np.ndarray) -> np.ndarray:
        """(468, 2 or 3) landmarks in pixels → (5, 2) points in pixels."""
        xy = np.asarray(landmarks, dtype=np.float64)[:, :2]
        return np.stack(
            [np.asarray(w) @ xy[list(idx)] for idx, w in zip(self.indices, self.weights)]
        )

    @classmethod
    def nearest(cls) -> "FivePointMap":
        return cls(tuple((i,) for i in NEAREST_MESH), tuple((1.0,) for _ in NEAREST_MESH))

    @classmethod
    def from_json(cls, path: Path) -> "FivePointMap":
        spec = json.loads(path.read_text())
        return cls(
            tuple(tuple(int(i) for i in p["indices"]) for p in spec["points"]),
            tuple(tuple(float(w) for w in p["weights"]) for p in spec["points"]),
            name=spec.get("name", path.stem),
        )


@lru_cache(maxsize=1)
def five_point_map() -> FivePointMap:
    """The shipped landmark → dlib five-point map (``models/five_point_map.json``), or the
    nearest-landmark map when that file is absent."""
    if _MAP_FILE.is_file():
        return FivePointMap.from_json(_MAP_FILE)
    return FivePointMap.nearest()


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection)
    mapping ``src`` (N, 2) onto ``dst`` (N, 2). Returns a 2×3 matrix."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s0, d0 = src - ms, dst - md
    var = (s0**2).sum()
    if var <= 0:
        raise ValueError("degenerate source points")
    # closed form for 2-D: a = scale*cos, b = scale*sin
    a = (s0[:, 0] * d0[:, 0] + s0[:, 1] * d0[:, 1]).sum() / var
    b = (s0[:, 0] * d0[:, 1] - s0[:, 1] * d0[:, 0]).sum() / var
    r = np.array([[a, -b], [b, a]])
    t = md - r @ ms
    return np.hstack([r, t[:, None]])


def chip_transform(points5: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """2×3 matrix mapping chip pixel centres to image pixels for dlib's chip geometry.

    As dlib does: the least-squares transform fixes the angle, the scale s and the centre
    (its image of chip point (size/2, size/2)); the chip's ``size`` pixels then span a
    source rectangle ``size·s − 1`` pixels wide around that centre.
    """
    m = similarity_transform(dlib_template(size, padding), points5)
    s = math.hypot(m[0, 0], m[1, 0])
    rot = m[:, :2] / s
    centre = m[:, :2] @ np.array([size / 2, size / 2]) + m[:, 2]
    lin = rot * ((size * s - 1) / (size - 1))
    t = centre - lin @ np.array([(size - 1) / 2, (size - 1) / 2])
    return np.hstack([lin, t[:, None]])


def extract_chip(
    image: np.ndarray, points5: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING
) -> np.ndarray:
    """The (size, size, 3) uint8 RGB face chip for five dlib-order points in pixels."""
    m = chip_transform(points5, size, padding)
    scale = math.hypot(m[0, 0], m[1, 0])  # image pixels per chip pixel
    # Work on the part of the image the chip covers (plus a margin for the filters).
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) - [0.5, 0.5, 0]
    pts = corners @ m.T
    h, w = image.shape[:2]
    x0 = int(max(0, math.floor(pts[:, 0].min()) - 8))
    y0 = int(max(0, math.floor(pts[:, 1].min()) - 8))
    x1 = int(min(w, math.ceil(pts[:, 0].max()) + 9))
    y1 = int(min(h, math.ceil(pts[:, 1].max()) + 9))
    if x1 - x0 < 2 or y1 - y0 < 2:  # chip entirely outside the image
        return np.zeros((size, size, 3), np.uint8)
    img = image[y0:y1, x0:x1]
    m = m.copy()
    m[:, 2] -= (x0, y0)
    while scale > 2.0 and min(img.shape[:2]) >= 4:
        img = cv2.pyrDown(img)
        m = m / 2.0
        scale /= 2.0
    return cv2.warpAffine(
        img, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
    )


# --------------------------------------------------------------------------- insightface 112

# insightface's ``arcface_dst`` (``face_align.py``): chip pixels (x, y) of, in order, the
# image-left eye centre, the image-right eye centre, the nose tip, the image-left and the
# image-right mouth corner (the subject's right eye is on the image's left).
INSIGHTFACE_TEMPLATE_112 = np.array(
    [
        (38.2946, 51.6963),
        (73.5318, 51.5014),
        (56.0252, 71.7366),
        (41.5493, 92.3655),
        (70.7299, 92.2041),
    ]
)
INSIGHTFACE_CHIP_SIZE = 112

# Face-mesh contour of each eye (16 points; their mean is the eye centre): the eye on the
# image's left (the subject's right; outer corner 33, inner 133) and on the image's right.
MESH_EYE_IMAGE_LEFT = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
MESH_EYE_IMAGE_RIGHT = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
MESH_NOSE_TIP = 4  # 1 is the tip's lower front point; chosen by measured accuracy (EMBEDDERS.md)
MESH_MOUTH_IMAGE_LEFT = 61
MESH_MOUTH_IMAGE_RIGHT = 291


@lru_cache(maxsize=4)
def insightface_map(nose: int = MESH_NOSE_TIP) -> FivePointMap:
    """Face-mesh landmarks → insightface's five points, in the template's order."""
    eye = lambda idx: (tuple(idx), tuple(1.0 / len(idx) for _ in idx))  # noqa: E731
    parts = [
        eye(MESH_EYE_IMAGE_LEFT),
        eye(MESH_EYE_IMAGE_RIGHT),
        ((nose,), (1.0,)),
        ((MESH_MOUTH_IMAGE_LEFT,), (1.0,)),
        ((MESH_MOUTH_IMAGE_RIGHT,), (1.0,)),
    ]
    return FivePointMap(tuple(p[0] for p in parts), tuple(p[1] for p in parts), name="insightface-mesh")


def insightface_transform(points5: np.ndarray, size: int = INSIGHTFACE_CHIP_SIZE) -> np.ndarray:
    """2×3 matrix mapping image pixels to chip pixels: the least-squares similarity that
    takes the five points (insightface order, pixels) onto the template (scaled to
    ``size``), as insightface's ``norm_crop`` estimates it."""
    return similarity_transform(points5, INSIGHTFACE_TEMPLATE_112 * (size / INSIGHTFACE_CHIP_SIZE))


def extract_chip_112(image: np.ndarray, points5: np.ndarray, size: int = INSIGHTFACE_CHIP_SIZE) -> np.ndarray:
    """The (size, size, 3) uint8 RGB insightface chip for five points in pixels
    (insightface order). Bilinear warp with a black border, like ``norm_crop``."""
    m = insightface_transform(points5, size)
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def _insightface_variant(eyes: str, nose: int, mouth: tuple[int, int], name: str) -> FivePointMap:
    if eyes == "contour16":
        left, right = MESH_EYE_IMAGE_LEFT, MESH_EYE_IMAGE_RIGHT
    elif eyes == "corners":
        left, right = (33, 133), (263, 362)
    else:
        raise ValueError(eyes)
    parts = [
        (tuple(left), tuple(1.0 / len(left) for _ in left)),
        (tuple(right), tuple(1.0 / len(right) for _ in right)),
        ((nose,), (1.0,)),
        ((mouth[0],), (1.0,)),
        ((mouth[1],), (1.0,)),
    ]
    return FivePointMap(tuple(p[0] for p in parts), tuple(p[1] for p in parts), name=name)


#: Candidate face-mesh → insightface five-point maps compared in docs/EMBEDDERS.md
#: ("Alignment"): eye centre as the mean of the 16 contour landmarks or of the two corners;
#: nose tip landmark 4 or 1; mouth corners at the outer lip corners (61, 291) or the inner
#: ones (78, 308). ``"contour16-nose4-mouth61"`` is :func:`insightface_map`'s default.
INSIGHTFACE_MAPS: dict[str, FivePointMap] = {
    m.name: m
    for m in (
        _insightface_variant("contour16", 4, (61, 291), "contour16-nose4-mouth61"),
        _insightface_variant("corners", 4, (61, 291), "corners-nose4-mouth61"),
        _insightface_variant("contour16", 1, (61, 291), "contour16-nose1-mouth61"),
        _insightface_variant("contour16", 4, (78, 308), "contour16-nose4-mouth78"),
        _insightface_variant("corners", 1, (78, 308), "corners-nose1-mouth78"),
    )
}


ALIGNMENTS = ("dlib-150", "insightface-112")


def aligned_chip(
    image: np.ndarray, landmarks: np.ndarray, alignment: str, size: int, five: FivePointMap | None = None
) -> np.ndarray:
    """The chip of geometry ``alignment`` (one of :data:`ALIGNMENTS`) from (468, 2|3)
    face-mesh landmarks in pixels of the RGB ``image``. ``five`` overrides the landmark →
    five-point map (default: the alignment's own, :func:`five_point_map` or
    :func:`insightface_map`)."""
    if alignment == "dlib-150":
        return extract_chip(image, (five or five_point_map()).apply(landmarks), size=size)
    if alignment == "insightface-112":
        return extract_chip_112(image, (five or insightface_map()).apply(landmarks), size=size)
    raise ValueError(f"unknown alignment {alignment!r}; expected one of {ALIGNMENTS}")
