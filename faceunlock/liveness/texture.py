"""Per-frame presentation-attack scoring from image texture: the two MiniFASNet models.

MiniFASNet (Silent-Face-Anti-Spoofing, Apache-2.0; see ``models/MODELS.md``) is a pair of
small CNNs that look at an 80×80 crop of the camera frame around the face — one crop 2.7×
the face box (``MiniFASNetV2``), one 4.0× (``MiniFASNetV1SE``) — and tell a real face from a
print or a screen by texture: moiré, screen gamut, paper, bezels. Each gives 3 logits;
class 1 is "real face", classes 0 and 2 are attack types. The per-frame **real score** is
upstream's: the two models' softmax probabilities of class 1, summed and halved (0..1).

Conventions:

* frames in and out of this module's public API are (H, W, 3) **uint8 RGB** (as everywhere in
  faceunlock); the models themselves take **BGR** (upstream read frames with OpenCV), float32
  pixel values **0..255 not divided**, no mean subtracted. Upstream's torch models are NCHW;
  the shipped TFLite models are **NHWC**, input (1, 80, 80, 3), output (1, 3) logits.
* boxes are pixel coordinates ``(x0, y0, x1, y1)`` of the full frame, as
  :meth:`faceunlock.FaceEngine.detect` returns them (``Face.box``).
* feed **full camera frames**: the crops need the context around the face. A tight face crop
  (little besides the face) is outside what the models were trained on and scores "fake"
  whether it shows a live face or not.
* **colour** frames only: on greyscale frames (a monochrome or IR camera, greyscale footage)
  live faces score "fake" too — 8 live dev clips (tuning half, 75 frames) converted to grey:
  89 % of frames below 0.44 against 0 % in colour. The check cannot vouch for a live face on
  such a camera; skipping it on grey frames would let a black-and-white print through.

By default the detector's box is first mapped to the box upstream's RetinaFace detector would
give (:func:`retinaface_box`; ``TextureCheck(correct_box=False)`` turns that off). The crop rule
is upstream's, exactly (:func:`crop_box`): the box is turned into upstream's
integer ``(x, y, w, h)``, scaled about its centre by ``min(scale, (H-1)/h, (W-1)/w)``, shifted
(not clipped) to lie inside the frame, cut out inclusive of its end pixels and resized to
80×80 with OpenCV's default (bilinear) interpolation.

Models load lazily on the first score, once per :class:`TextureCheck`; each file's sha256 is
checked against the value shipped in this module first. A :class:`TextureCheck` is not
thread-safe: use one per thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import ImageError, ModelError
from ..runtime import Model, load_model, model_path, sha256_file

__all__ = ["TextureModel", "TEXTURE_MODELS", "CROP_SIZE", "REAL_CLASS", "TextureCheck", "crop_box", "crop",
           "to_upstream_box", "retinaface_box", "softmax"]

CROP_SIZE = 80
"""Side of the square model input, pixels."""

REAL_CLASS = 1
"""Index of the "real face" class in each model's 3 outputs."""


@dataclass(frozen=True)
class TextureModel:
    """One shipped MiniFASNet model.

    Attributes:
        name: upstream's architecture name.
        file: file name in ``faceunlock/models``.
        sha256: sha256 of that file (checked at load).
        scale: crop scale about the face box (upstream's file-name prefix).
    """

    name: str
    file: str
    sha256: str
    scale: float


TEXTURE_MODELS: tuple[TextureModel, ...] = (
    TextureModel("MiniFASNetV2", "minifasnet_v2_2.7_80.tflite",
                 "0dde84d3d890e8f44218b4e994909893cc5f8fe95a57026480a97818e83291b3", 2.7),
    TextureModel("MiniFASNetV1SE", "minifasnet_v1se_4.0_80.tflite",
                 "c67f9ee41b3742af4496744c731a79dbaf8a0af9046dca60515739a56974a79e", 4.0),
)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, float64, numerically stable."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def to_upstream_box(box_xyxy) -> tuple[int, int, int, int]:
    """A float pixel box ``(x0, y0, x1, y1)`` as upstream's integer ``(x, y, w, h)``:
    ``int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1)`` (``int`` truncates toward 0,
    as upstream's detector wrapper does)."""
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    if not all(np.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ImageError(f"face box has non-finite coordinates: {box_xyxy!r}")
    return int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1)


# faceunlock's BlazeFace box vs upstream's RetinaFace box on the same faces (measured, see
# ../shared/models/minifasnet/README.md): 0.98x the width, 0.93x the height, centred 5 % lower.
WIDTH_RATIO, HEIGHT_RATIO, CENTRE_SHIFT = 0.98, 0.93, 0.05


def retinaface_box(box_xyxy) -> tuple[float, float, float, float]:
    """faceunlock's detector box mapped to the box upstream's RetinaFace would give (the
    models were trained on crops around that box): width / 0.98, height / 0.93, same
    horizontal centre, centre moved up by 5 % of the new height. Pixels in and out."""
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    w, h = (x1 - x0) / WIDTH_RATIO, (y1 - y0) / HEIGHT_RATIO
    cy -= CENTRE_SHIFT * h
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def crop_box(frame_hw: tuple[int, int], box_xyxy, scale: float) -> tuple[int, int, int, int]:
    """Upstream's crop rectangle ``(left, top, right, bottom)``, inclusive pixel indices.

    ``frame_hw`` is (height, width) of the frame in pixels; ``box_xyxy`` the face box in
    pixels; ``scale`` the crop scale (2.7 or 4.0 for the shipped models)."""
    src_h, src_w = int(frame_hw[0]), int(frame_hw[1])
    x, y, box_w, box_h = to_upstream_box(box_xyxy)
    if box_w <= 0 or box_h <= 0:
        raise ImageError(f"face box has no area: {box_xyxy!r}")
    scale = min((src_h - 1) / box_h, min((src_w - 1) / box_w, scale))
    new_w = box_w * scale
    new_h = box_h * scale
    cx, cy = box_w / 2 + x, box_h / 2 + y
    left, top = cx - new_w / 2, cy - new_h / 2
    right, bottom = cx + new_w / 2, cy + new_h / 2
    if left < 0:
        right -= left
        left = 0
    if top < 0:
        bottom -= top
        top = 0
    if right > src_w - 1:
        left -= right - src_w + 1
        right = src_w - 1
    if bottom > src_h - 1:
        top -= bottom - src_h + 1
        bottom = src_h - 1
    return int(left), int(top), int(right), int(bottom)


def crop(frame_bgr: np.ndarray, box_xyxy, scale: float) -> np.ndarray:
    """The 80×80 model input cut from ``frame_bgr`` (H, W, 3 uint8, any channel order: the
    order is kept) by upstream's rule (:func:`crop_box`), resized with ``cv2.resize``'s
    default bilinear interpolation."""
    left, top, right, bottom = crop_box(frame_bgr.shape[:2], box_xyxy, scale)
    patch = frame_bgr[top : bottom + 1, left : right + 1]
    if patch.size == 0:
        raise ImageError(f"face box {box_xyxy!r} gives an empty crop in a {frame_bgr.shape[1]}×{frame_bgr.shape[0]} frame")
    return cv2.resize(patch, (CROP_SIZE, CROP_SIZE))


def _check_frame(frame_rgb: object) -> np.ndarray:
    if not isinstance(frame_rgb, np.ndarray) or frame_rgb.dtype != np.uint8 or frame_rgb.ndim != 3 \
            or frame_rgb.shape[2] != 3 or frame_rgb.shape[0] < 2 or frame_rgb.shape[1] < 2:
        shape = getattr(frame_rgb, "shape", None)
        dtype = getattr(frame_rgb, "dtype", type(frame_rgb).__name__)
        raise ImageError(f"frame must be an (H, W, 3) uint8 RGB array, got shape {shape} dtype {dtype}")
    return frame_rgb


class TextureCheck:
    """The two MiniFASNet models on crops of a full frame around a face box.

    Args:
        threads: TFLite interpreter threads per model (1 is fastest per frame on small CPUs).
        correct_box: map the given box (faceunlock's detector) to upstream's RetinaFace box
            with :func:`retinaface_box` before cropping (default). On the tuning half of the
            dev data (eval-liveness's person split) this cut the per-frame equal-error rate of
            live full-frame video frames vs recorded replays and generated prints/screens from
            3.2 % to 2.2 % (``faceunlock.evaluation.texture_eval``; on the reporting half the
            two were alike, 3.3 % vs 3.6 %). ``False`` crops around the box as given.
    """

    def __init__(self, threads: int | None = 1, *, correct_box: bool = True):
        self.threads = threads
        self.correct_box = correct_box
        self._models: list[Model] | None = None

    @property
    def models(self) -> tuple[TextureModel, ...]:
        """The shipped models this check runs, in order."""
        return TEXTURE_MODELS

    def _load(self) -> list[Model]:
        if self._models is None:
            loaded = []
            for m in TEXTURE_MODELS:
                path = model_path(m.file)
                if not path.is_file():
                    raise ModelError(f"texture model missing: {path} (reinstall faceunlock)")
                got = sha256_file(path)
                if got != m.sha256:
                    raise ModelError(f"{path} has sha256 {got}, expected {m.sha256}: the file was changed; "
                                     "reinstall faceunlock")
                model = load_model(path, threads=self.threads)
                (inp,) = model.input_details
                if tuple(inp["shape"]) != (1, CROP_SIZE, CROP_SIZE, 3) or len(model.output_details) != 1:
                    raise ModelError(f"{m.file}: unexpected input {inp['shape']} / {len(model.output_details)} outputs")
                loaded.append(model)
            self._models = loaded
        return self._models

    def crops(self, frame_rgb: np.ndarray, box_xyxy) -> dict[float, np.ndarray]:
        """{scale: 80×80×3 uint8 **BGR** crop} for each model's scale (2.7, 4.0).

        ``frame_rgb``: the full (H, W, 3) uint8 RGB frame; ``box_xyxy``: the face box in
        pixels of that frame, as faceunlock's detector gives it (mapped by
        :func:`retinaface_box` first when ``correct_box``)."""
        frame_rgb = _check_frame(frame_rgb)
        to_upstream_box(box_xyxy)  # rejects non-finite boxes before any arithmetic
        if self.correct_box:
            box_xyxy = retinaface_box(box_xyxy)
        # Cropping and resizing act on each channel alone, so crop the RGB frame and swap
        # the channels of the small crop only (same bytes as cropping a BGR copy).
        return {m.scale: np.ascontiguousarray(crop(frame_rgb, box_xyxy, m.scale)[:, :, ::-1])
                for m in TEXTURE_MODELS}

    def logits_of_crops(self, crops_bgr: dict[float, np.ndarray]) -> dict[str, np.ndarray]:
        """{model name: logits (3,) float32} for crops made by :meth:`crops`."""
        out = {}
        for m, model in zip(TEXTURE_MODELS, self._load()):
            c = np.asarray(crops_bgr[m.scale])
            if c.shape != (CROP_SIZE, CROP_SIZE, 3):
                raise ImageError(f"crop for scale {m.scale} must be {CROP_SIZE}×{CROP_SIZE}×3, got {c.shape}")
            (logits,) = model.run(c.astype(np.float32)[None])
            out[m.name] = logits.reshape(-1).astype(np.float32)
        return out

    def logits(self, frame_rgb: np.ndarray, box_xyxy) -> dict[str, np.ndarray]:
        """{model name: raw logits (3,) float32} on the crops of ``frame_rgb`` around ``box_xyxy``."""
        return self.logits_of_crops(self.crops(frame_rgb, box_xyxy))

    def scores(self, frame_rgb: np.ndarray, box_xyxy) -> dict[str, np.ndarray]:
        """{model name: softmax probabilities (3,) float64}; index 1 = real face."""
        return {k: softmax(v) for k, v in self.logits(frame_rgb, box_xyxy).items()}

    def score(self, frame_rgb: np.ndarray, box_xyxy) -> float:
        """Real score in 0..1: the two models' probabilities of class 1 ("real face"),
        summed and halved (upstream's decision rule: real when this is the largest of the
        summed class probabilities)."""
        probs = self.scores(frame_rgb, box_xyxy)
        return float(sum(p[REAL_CLASS] for p in probs.values()) / len(probs))
