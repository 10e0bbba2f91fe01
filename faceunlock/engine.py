"""FaceEngine: detect → landmarks → align → embed, with models loaded lazily, once."""

from __future__ import annotations

import threading

import numpy as np

from . import align, detect
from .detect import Detection, Face
from .embed import DLIB_RESNET, Embedder, EmbedderSpec
from .errors import NoFaceError
from .image import as_rgb
from .runtime import Model, load_model, model_path

__all__ = ["FaceEngine"]

DETECTOR_FILE = "face_detection_short_range.tflite"
LANDMARK_FILE = "face_landmark.tflite"
# Tiled search for small faces: the short-range detector wants a face to fill roughly a
# sixth of its input or more, so a 40-px face needs tiles of about 240 px.
MIN_TILE_PX = 240
TILE_OVERLAP = 0.25


class FaceEngine:
    """Finds faces and turns them into templates.

    Args:
        threads: interpreter threads per model; ``None`` lets the runtime choose. One
            thread is usually the fastest per frame on small devices.
        embedder: an :class:`~faceunlock.embed.EmbedderSpec` (default: dlib's ResNet).
        refine_landmarks: run the face mesh a second time on an ROI built from the first
            pass's landmarks (tighter and better centred than the detector's box).

    Models load on first use, once per engine. An engine is not thread-safe: give each
    thread its own.
    """

    def __init__(
        self,
        threads: int | None = None,
        *,
        embedder: EmbedderSpec | None = None,
        refine_landmarks: bool = False,
    ) -> None:
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        self.threads = threads
        self.refine_landmarks = refine_landmarks
        self._embedder = Embedder(embedder or DLIB_RESNET, threads=threads)
        self._detector: Model | None = None
        self._landmarker: Model | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ models
    @property
    def embedder_spec(self) -> EmbedderSpec:
        return self._embedder.spec

    @property
    def threshold(self) -> float:
        """Calibrated cosine-similarity threshold (strong level) of the embedder in use."""
        return self._embedder.spec.threshold

    def _models(self) -> tuple[Model, Model]:
        if self._detector is None or self._landmarker is None:
            with self._lock:
                if self._detector is None:
                    self._detector = load_model(model_path(DETECTOR_FILE), threads=self.threads)
                if self._landmarker is None:
                    self._landmarker = load_model(model_path(LANDMARK_FILE), threads=self.threads)
        return self._detector, self._landmarker

    def warm_up(self) -> None:
        """Load every model now (otherwise they load on first use)."""
        self._models()
        _ = self._embedder.model

    # ------------------------------------------------------------------ stages
    def detections(self, image: np.ndarray) -> list[Detection]:
        """Raw BlazeFace detections of an RGB frame, in pixels.

        The whole frame is searched first (letterboxed to 128×128); if nothing is found
        in a large frame, overlapping tiles of decreasing size (down to 240 px) are
        searched so faces down to about 40 px wide are found in frames up to 4K.
        """
        image = as_rgb(image)
        det_model, _ = self._models()
        found = detect.run_detector(det_model, image)
        h, w = image.shape[:2]
        tile = max(h, w) / 2
        while not found and tile >= MIN_TILE_PX:
            found = self._tiled(det_model, image, int(tile))
            tile /= 2
        return found

    def _tiled(self, model: Model, image: np.ndarray, tile: int) -> list[Detection]:
        h, w = image.shape[:2]
        step = max(1, int(tile * (1 - TILE_OVERLAP)))
        xs = list(range(0, max(1, w - tile) + 1, step))
        ys = list(range(0, max(1, h - tile) + 1, step))
        if xs[-1] + tile < w:
            xs.append(w - tile)
        if ys[-1] + tile < h:
            ys.append(h - tile)
        boxes, kps, scores = [], [], []
        for y in ys:
            for x in xs:
                crop = image[max(0, y) : y + tile, max(0, x) : x + tile]
                for d in detect.run_detector(model, crop):
                    x0, y0, x1, y1 = d.box
                    boxes.append((x0 + x, y0 + y, x1 + x, y1 + y))
                    kps.append(d.keypoints + (x, y))
                    scores.append(d.score)
        if not boxes:
            return []
        merged = detect.weighted_nms(np.array(boxes), np.array(kps), np.array(scores))
        return [
            Detection(box=tuple(float(v) for v in b), score=s, keypoints=k.astype(np.float32))
            for b, k, s in merged
        ]

    def face_from_detection(self, image: np.ndarray, det: Detection) -> Face | None:
        """Run the face mesh for one detection; None when the mesh sees no face there."""
        _, lm_model = self._models()
        roi = detect.roi_from_keypoints(det.box, det.keypoints[0], det.keypoints[1])
        landmarks, presence = detect.run_landmarks(lm_model, image, roi)
        if presence < detect.MIN_PRESENCE:
            return None
        if self.refine_landmarks:
            landmarks2, presence2 = detect.run_landmarks(
                lm_model, image, detect.roi_from_landmarks(landmarks)
            )
            if presence2 >= detect.MIN_PRESENCE:
                landmarks, presence = landmarks2, presence2
        yaw, pitch, roll = detect.head_pose(landmarks)
        return Face(
            box=det.box, score=det.score, landmarks=landmarks, yaw=yaw, pitch=pitch, roll=roll,
            presence=presence, keypoints=det.keypoints,
        )

    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces in an (H, W, 3) uint8 RGB frame, largest (by box area) first.

        Grey (H, W) and RGBA input are converted; pass OpenCV's BGR frames as
        ``frame[:, :, ::-1]``. Raises :class:`~faceunlock.ImageError` for unusable input.
        """
        image = as_rgb(image)
        faces = [f for d in self.detections(image) if (f := self.face_from_detection(image, d))]
        faces.sort(key=lambda f: -(f.width * f.height))
        return faces

    def chip(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The embedder's aligned (S, S, 3) uint8 RGB chip for ``face``."""
        points = align.five_point_map().apply(face.landmarks)
        return align.extract_chip(as_rgb(image), points, size=self._embedder.spec.input_size)

    def face_template(self, image: np.ndarray, face: Face) -> np.ndarray:
        """Unit-norm float32 template of one already detected face."""
        return self._embedder.embed(self.chip(image, face))

    def template(self, image: np.ndarray) -> np.ndarray:
        """Template of the largest face: float32 (D,), unit norm (D = 128 for the default).

        Raises :class:`~faceunlock.NoFaceError` when there is no face.
        """
        image = as_rgb(image)
        faces = self.detect(image)
        if not faces:
            raise NoFaceError("no face found in the image")
        return self.face_template(image, faces[0])

    def templates(self, image: np.ndarray) -> list[np.ndarray]:
        """One template per face, in :meth:`detect` order (an empty list when no face)."""
        image = as_rgb(image)
        return [self.face_template(image, f) for f in self.detect(image)]

    def __repr__(self) -> str:
        loaded = self._detector is not None
        return f"FaceEngine(threads={self.threads}, embedder={self._embedder.spec.name!r}, loaded={loaded})"
