"""FaceEngine: detect → landmarks → align → embed, with models loaded lazily, once."""

from __future__ import annotations

import os
import threading

import numpy as np

from . import align, detect
from .detect import Detection, Face
from .embed import Embedder, EmbedderSpec, resolve_embedder
from .errors import ModelError, NoFaceError
from .image import as_rgb
from .runtime import Model, load_model, model_path

__all__ = ["FaceEngine"]

DETECTOR_FILE = "face_detection_short_range.tflite"
LANDMARK_FILE = "face_landmark.tflite"
# Small-face search: the short-range detector wants a face to fill roughly 0.15–0.7 of its
# 128-px input. When the whole frame (letterboxed to 128) shows no face, the frame is searched
# again at scales 128 / T for T = max(H, W) / 2, / 4, ... down to MIN_TILE_PX, each in ONE
# invoke on the resized frame (the detector is fully convolutional), so a 40-px face is found
# anywhere in a frame up to 4K. The fallback input is capped at MAX_FALLBACK_SIDE pixels.
MIN_TILE_PX = 240
MAX_FALLBACK_SIDE = 2048
# The fallback stops at the first scale with a detection at least this confident (a face at
# a scale that suits it scores ≈ 0.9; marginal scales give 0.5–0.7, sometimes spuriously).
FALLBACK_STOP_SCORE = 0.8
# Searching several scales gives more chances to false positives (0.5–0.6 on a helmet or a
# patterned shirt), and a real face at a scale that suits it scores ≥ 0.8: the fallback
# keeps only detections scoring at least this.
FALLBACK_MIN_SCORE = 0.65


class FaceEngine:
    """Finds faces and turns them into templates.

    Args:
        threads: interpreter threads per model; ``None`` lets the runtime choose. One
            thread is usually the fastest per frame on small devices.
        embedder: which embedding model makes the templates: ``None`` (the default,
            ``"mobilefacenet-v1"``: MobileFaceNet, Apache-2.0, 192-D), ``"dlib-resnet-v1"``
            (dlib's CC0 ResNet, 128-D, also shipped), the name of a model imported with
            ``faceunlock models import`` (e.g. ``"insightface-mbf"``), a path to its
            ``spec.json`` or folder, or an :class:`~faceunlock.embed.EmbedderSpec`. An
            unknown name raises :class:`~faceunlock.ModelError` saying how to import it.
            Templates remember their embedder; a user enrolled with another one must
            re-enrol (or unlock with an engine using that embedder).
        refine_landmarks: run the face mesh a second time on an ROI built from the first
            pass's landmarks and average the two sets of landmarks. Costs one face-mesh run
            (≈ 1.6 ms); lowered the false rejects at the strong threshold from 6.3 % to 5.3 %
            on the dev pairs and steadies faces cut by the frame border.

    Models load on first use, once per engine. An engine is not thread-safe: give each
    thread its own.
    """

    def __init__(
        self,
        threads: int | None = None,
        *,
        embedder: EmbedderSpec | str | os.PathLike[str] | None = None,
        refine_landmarks: bool = True,
    ) -> None:
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        self.threads = threads
        self.refine_landmarks = refine_landmarks
        self._embedder = Embedder(resolve_embedder(embedder), threads=threads)
        self._detector: Model | None = None
        self._landmarker: Model | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ models
    @property
    def embedder_spec(self) -> EmbedderSpec:
        return self._embedder.spec

    @property
    def threshold(self) -> float:
        """Calibrated cosine-similarity threshold (strong level: ≤ 1/50,000 false accepts per
        comparison on the dev impostor pairs) of the embedder in use; for the default it is
        ``faceunlock.DEFAULT_THRESHOLD``."""
        t = self._embedder.spec.threshold
        if t is None:
            raise ModelError(
                f"embedder {self._embedder.spec.name!r} has no calibrated threshold: measure one with "
                f"`faceunlock calibrate ROOTS --embedder {self._embedder.spec.name}` (docs/EMBEDDERS.md)"
            )
        return t

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

        The whole frame is searched first (letterboxed to 128×128: fast, finds faces of
        about a sixth of the frame or more). If nothing is found in a frame larger than
        2 × ``MIN_TILE_PX``, it is searched again at finer scales (see ``MIN_TILE_PX``)
        from coarse to fine until one finds a confident face, and the results of the scales
        searched are merged, so faces down to about 40 px wide are found in frames up to 4K
        (≈ 0.5 s for a 4K frame with a 40-px face on one x86 core; less for larger faces).
        """
        image = as_rgb(image)
        det_model, _ = self._models()
        found = detect.run_detector(det_model, image)
        if found:
            return found
        h, w = image.shape[:2]
        longest = max(h, w)
        scales: list[float] = []
        tile = longest / 2
        tiles = []
        while tile >= MIN_TILE_PX:
            tiles.append(tile)
            tile /= 2
        if tiles and tiles[-1] > 1.25 * MIN_TILE_PX:
            tiles.append(MIN_TILE_PX)  # always end at the finest scale
        for tile in tiles:
            scale = min(detect.DETECTOR_SIZE / tile, MAX_FALLBACK_SIDE / longest)
            if not scales or scale > scales[-1] * 1.01:
                scales.append(scale)
        dets: list[Detection] = []
        for scale in scales:  # coarse to fine: the coarse scales are cheap
            level = detect.run_detector_scaled(det_model, image, scale, FALLBACK_MIN_SCORE)
            dets += level
            if any(d.score >= FALLBACK_STOP_SCORE for d in level):
                break  # a confident face at this scale: skip the finer, slower ones
        if len(dets) <= 1:
            return dets
        merged = detect.weighted_nms(
            np.array([d.box for d in dets], np.float64),
            np.array([d.keypoints for d in dets], np.float64),
            np.array([d.score for d in dets], np.float64),
        )
        return [
            Detection(box=tuple(float(v) for v in b), score=sc, keypoints=k.astype(np.float32))
            for b, k, sc in merged
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
                # Two estimates from differently placed crops; their mean is steadier than
                # either (measured: see the README, "Detection details and limits").
                landmarks = (landmarks + landmarks2) / 2
                presence = min(presence, presence2)
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
        spec = self._embedder.spec
        five = align.INSIGHTFACE_MAPS[spec.landmarks_map] if spec.landmarks_map else None
        return align.aligned_chip(as_rgb(image), face.landmarks, spec.alignment, spec.input_size, five)

    def face_template(self, image: np.ndarray, face: Face) -> np.ndarray:
        """Unit-norm float32 template of one already detected face."""
        return self._embedder.embed(self.chip(image, face))

    def template(self, image: np.ndarray) -> np.ndarray:
        """Template of the largest face: float32 (D,), unit norm (D = 192 for the default
        ``mobilefacenet-v1``, 128 for ``dlib-resnet-v1``, 512 for ``insightface-mbf``).

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
