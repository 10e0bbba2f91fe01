"""Face chip → template, and template comparison.

A template is a float32 vector of unit L2 norm; two templates are compared by cosine
similarity (their dot product). The shipped embedder is dlib's ResNet face descriptor
(CC0), converted to TFLite with fp16 weights (see ``models/MODELS.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import FaceUnlockError
from .runtime import Model, load_model, model_path

__all__ = ["EmbedderSpec", "DLIB_RESNET", "DEFAULT_THRESHOLD", "CONVENIENCE_THRESHOLD", "Embedder", "similarity", "normalize"]


@dataclass(frozen=True)
class EmbedderSpec:
    """What an embedding model needs and what its scores mean.

    Attributes:
        name: short id stored with every template it makes.
        file: model file name inside ``faceunlock/models`` (or an absolute path).
        input_size: chip side in pixels (square RGB input, float32 0..255 values fed as is).
        dim: template dimension.
        threshold: cosine similarity at which the model is calibrated for ≤ 1/50,000 false
            accepts per comparison (the ``strong`` level).
        convenience_threshold: a looser calibrated threshold (≤ 1/1,000 false accepts).
        flip_average: average the templates of the chip and its mirror image.
    """

    name: str
    file: str
    input_size: int
    dim: int
    threshold: float
    convenience_threshold: float
    flip_average: bool = False


# Calibrated on all pairs of the dev images (README, "How the threshold was set"):
#   faceunlock calibrate ../shared/data/faces-dev/lfw_dev/images \
#       ../shared/data/faces-dev/orl_att_faces ../shared/data/faces-dev/faceapi_bbt --exclude group_photos
# 727 images, 258,983 impostor pairs: 5 false accepts at >= 0.94343 (1/50,000), 258 at
# >= 0.92780 (1/1,000). Rounded up to 4 decimals.
DLIB_RESNET = EmbedderSpec(
    name="dlib-resnet-v1",
    file="dlib_resnet_v1_fp16.tflite",
    input_size=150,
    dim=128,
    threshold=0.9435,
    convenience_threshold=0.9278,
)
DEFAULT_THRESHOLD: float = DLIB_RESNET.threshold
CONVENIENCE_THRESHOLD: float = DLIB_RESNET.convenience_threshold


def normalize(v: np.ndarray) -> np.ndarray:
    """``v`` scaled to unit L2 norm along its last axis, as float32."""
    v = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    if np.any(n == 0) or not np.all(np.isfinite(n)):
        raise FaceUnlockError("cannot normalise a zero or non-finite embedding")
    return (v / n).astype(np.float32)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two templates, in [-1, 1]; the same person iff
    ``similarity(a, b) >= DEFAULT_THRESHOLD`` (for the default embedder).

    Inputs need not be unit length; both must be 1-D, the same length and finite.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"templates must have the same non-zero length, got {a.size} and {b.size}")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if not (np.isfinite(na) and np.isfinite(nb)) or na == 0 or nb == 0:
        raise ValueError("templates must be finite and non-zero")
    return float(np.clip(a @ b / (na * nb), -1.0, 1.0))


class Embedder:
    """Runs an embedding model on face chips. Loads the model on first use."""

    def __init__(self, spec: EmbedderSpec = DLIB_RESNET, *, threads: int | None = None):
        self.spec = spec
        self.threads = threads
        self._model: Model | None = None

    @property
    def model(self) -> Model:
        if self._model is None:
            self._model = load_model(model_path(self.spec.file), threads=self.threads)
        return self._model

    def raw(self, chip: np.ndarray) -> np.ndarray:
        """The model's raw output for one (S, S, 3) uint8 RGB chip, float32 (D,)."""
        x = np.asarray(chip, dtype=np.float32)[None]
        return self.model.run(x)[0].reshape(-1)

    def embed(self, chip: np.ndarray) -> np.ndarray:
        """Unit-norm float32 template of one chip."""
        v = self.raw(chip)
        if self.spec.flip_average:
            v = normalize(v) + normalize(self.raw(chip[:, ::-1]))
        return normalize(v)
