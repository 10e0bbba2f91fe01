"""Face detection (BlazeFace short-range) and face-mesh landmarks on a TFLite interpreter.

Pure numpy/OpenCV around two MediaPipe models:

* ``face_detection_short_range.tflite``: 128×128 RGB in [-1, 1] → 896 anchors ×
  (box + 6 keypoints) regressors and logits. Decoded here with SSD anchors and
  MediaPipe-style weighted non-maximum suppression.
* ``face_landmark.tflite``: a 192×192 RGB crop in [0, 1], rotated so the eyes are
  level → 468 (x, y, z) landmarks in crop pixels and a face-presence logit.

Coordinates: all public results are in **pixels of the input frame**, x to the right,
y down, origin at the top-left corner of the top-left pixel's centre (OpenCV's
convention). Landmark z is the relative depth in the same pixel scale, smaller = closer
to the camera, 0 near the centre of the head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

__all__ = [
    "Face",
    "Detection",
    "ssd_anchors",
    "ssd_anchors_px",
    "decode_detections",
    "weighted_nms",
    "letterbox",
    "run_detector",
    "run_detector_scaled",
    "roi_from_keypoints",
    "head_pose",
]

DETECTOR_SIZE = 128
LANDMARK_SIZE = 192
MIN_DETECTION_SCORE = 0.5
NMS_IOU = 0.3
MIN_PRESENCE = 0.5
# Mesh indices used for the ROI and head pose (image-left eye = the subject's right eye).
EYE_OUTER_LEFT_IMG, EYE_OUTER_RIGHT_IMG = 33, 263
FOREHEAD, CHIN, NOSE_TIP = 10, 152, 1


@dataclass(frozen=True)
class Detection:
    """One BlazeFace detection, in pixels of the frame it was run on.

    ``keypoints`` (6, 2): the subject's right eye (image left for an unmirrored
    camera), left eye, nose tip, mouth centre, right ear tragion, left ear tragion.
    """

    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray


@dataclass(frozen=True)
class Face:
    """A detected face with its 468 face-mesh landmarks.

    Attributes:
        box: (x0, y0, x1, y1) of the detector's box, pixels of the input frame.
        score: detector confidence in [0, 1].
        landmarks: (468, 3) float32 — x, y in pixels; z relative depth in pixels
            (smaller = closer to the camera).
        yaw, pitch, roll: head pose in degrees. yaw > 0: the nose points towards the
            image's right; pitch > 0: the nose points up; roll > 0: the face is turned
            clockwise in the image. 0, 0, 0 is a frontal, upright face.
        presence: face-mesh confidence that the crop holds a face, in [0, 1].
        keypoints: (6, 2) detector keypoints in pixels (see :class:`Detection`).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray = field(repr=False)
    yaw: float
    pitch: float
    roll: float
    presence: float = 1.0
    keypoints: np.ndarray = field(default_factory=lambda: np.zeros((6, 2), np.float32), repr=False)

    @property
    def width(self) -> float:
        """Width of the detector box in pixels."""
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        """Height of the detector box in pixels."""
        return self.box[3] - self.box[1]


# --------------------------------------------------------------------------- detector


@lru_cache(maxsize=1)
def ssd_anchors() -> np.ndarray:
    """The 896 (x_centre, y_centre) anchors of BlazeFace short-range, normalised to [0, 1].

    Four layers with strides 8, 16, 16, 16; layers of equal stride share a grid and each
    layer adds two fixed-size anchors per cell: 16×16×2 + 8×8×6 = 896.
    """
    strides = [8, 16, 16, 16]
    out = []
    i = 0
    while i < len(strides):
        stride = strides[i]
        n = 0
        while i < len(strides) and strides[i] == stride:
            n += 2
            i += 1
        grid = DETECTOR_SIZE // stride
        ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
        centres = np.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], axis=-1).reshape(-1, 1, 2)
        out.append(np.repeat(centres, n, axis=1).reshape(-1, 2))
    anchors = np.concatenate(out).astype(np.float32)
    assert anchors.shape == (896, 2)
    return anchors


@lru_cache(maxsize=8)
def ssd_anchors_px(height: int, width: int) -> np.ndarray:
    """Anchor centres (x, y) in input pixels for a detector input of ``height``×``width``
    (multiples of 16), in the detector's output order.

    The detector is fully convolutional: on a larger input it returns one anchor per cell
    of each layer's larger grid (for 128×128 this is :func:`ssd_anchors` × 128).
    """
    out = []
    for stride, per_cell in ((8, 2), (16, 6)):
        ys, xs = np.meshgrid(
            np.arange(height // stride), np.arange(width // stride), indexing="ij"
        )
        centres = np.stack([(xs + 0.5) * stride, (ys + 0.5) * stride], axis=-1).reshape(-1, 1, 2)
        out.append(np.repeat(centres, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(out).astype(np.float64)


def decode_detections(
    regressors: np.ndarray, logits: np.ndarray, min_score: float = MIN_DETECTION_SCORE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode raw detector outputs into boxes, keypoints and scores above ``min_score``.

    Args:
        regressors: (896, 16) — x, y, w, h, then 6 (x, y) keypoints, in 128-px input units
            relative to the anchor centre.
        logits: (896,) raw scores (clipped to ±100, then sigmoid).
    Returns:
        boxes (N, 4) as (x0, y0, x1, y1), keypoints (N, 6, 2) and scores (N,), all
        normalised to the detector input [0, 1].
    """
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100.0, 100.0)))
    keep = np.nonzero(scores >= min_score)[0]
    if keep.size == 0:
        return np.zeros((0, 4)), np.zeros((0, 6, 2)), np.zeros((0,))
    raw = regressors[keep].astype(np.float64) / DETECTOR_SIZE
    anchors = ssd_anchors()[keep].astype(np.float64)
    cx = raw[:, 0] + anchors[:, 0]
    cy = raw[:, 1] + anchors[:, 1]
    w, h = raw[:, 2], raw[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    kps = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
    return boxes, kps, scores[keep]


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float = NMS_IOU
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's weighted NMS: each cluster of boxes overlapping the best remaining one
    by more than ``iou_threshold`` becomes one detection whose box and keypoints are the
    score-weighted mean of the cluster and whose score is the best score in it."""
    order = np.argsort(-scores, kind="stable")
    remaining = order
    out = []
    while remaining.size:
        best = remaining[0]
        overlap = _iou(boxes[best], boxes[remaining])
        cluster = remaining[overlap > iou_threshold]
        if cluster.size == 0:  # degenerate box: keep it alone
            cluster = remaining[:1]
        w = scores[cluster][:, None]
        box = (boxes[cluster] * w).sum(0) / w.sum()
        kps = (keypoints[cluster] * w[:, :, None]).sum(0) / w.sum()
        out.append((box, kps, float(scores[best])))
        remaining = remaining[overlap <= iou_threshold]
        remaining = remaining[remaining != best]
    return out


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, float, float]:
    """Fit ``image`` into a ``size``×``size`` square keeping its aspect ratio, centred, the
    rest zero — sampled exactly as MediaPipe's CPU image-to-tensor step does it.

    MediaPipe maps the square region around the frame onto the tensor with one affine
    transform built in continuous (edge-based) coordinates and samples it bilinearly with
    that matrix as is; doing the same here is what makes our boxes and scores agree with
    MediaPipe's own ``FaceDetector`` (IoU ≥ 0.92, scores within 0.01 on group photos, where
    an area-averaging resize gave IoU down to 0.11 on small faces).

    Returns (square uint8 image, scale, pad_x, pad_y): a frame point p (edge-based) lands at
    ``p * scale + pad`` in the square.
    """
    h, w = image.shape[:2]
    side = max(h, w)
    scale = size / side
    pad_x, pad_y = (side - w) / 2 * scale, (side - h) / 2 * scale
    m = np.array([[scale, 0.0, pad_x], [0.0, scale, pad_y]])
    out = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return out, scale, pad_x, pad_y


# --------------------------------------------------------------------------- landmarks


def roi_from_keypoints(
    box: tuple[float, float, float, float], right_eye: np.ndarray, left_eye: np.ndarray,
    scale: float = 1.5,
) -> tuple[float, float, float, float]:
    """The rotated square region the face-mesh model looks at, as MediaPipe builds it.

    Centre of the detector box, side = ``scale`` × the box's longer side, rotation so that
    the line from the subject's right eye to the left eye is horizontal.

    Returns (centre_x, centre_y, side, angle_rad), pixels; angle is the rotation of the face
    in the image (positive = clockwise on screen with y down).
    """
    x0, y0, x1, y1 = box
    angle = math.atan2(float(left_eye[1] - right_eye[1]), float(left_eye[0] - right_eye[0]))
    side = max(x1 - x0, y1 - y0) * scale
    return (x0 + x1) / 2, (y0 + y1) / 2, side, angle


def roi_from_landmarks(landmarks: np.ndarray, scale: float = 1.5) -> tuple[float, float, float, float]:
    """A face-mesh ROI from a previous set of landmarks (tighter than the detector's)."""
    le, re = landmarks[EYE_OUTER_LEFT_IMG, :2], landmarks[EYE_OUTER_RIGHT_IMG, :2]
    angle = math.atan2(float(re[1] - le[1]), float(re[0] - le[0]))
    c, s = math.cos(-angle), math.sin(-angle)
    pts = landmarks[:, :2]
    centre0 = (pts.min(0) + pts.max(0)) / 2
    rot = (pts - centre0) @ np.array([[c, s], [-s, c]])
    lo, hi = rot.min(0), rot.max(0)
    mid = (lo + hi) / 2
    ci, si = math.cos(angle), math.sin(angle)
    centre = centre0 + mid @ np.array([[ci, si], [-si, ci]])
    side = float(max(hi - lo)) * scale
    return float(centre[0]), float(centre[1]), side, angle


def roi_transform(roi: tuple[float, float, float, float], size: int) -> np.ndarray:
    """2×3 affine matrix mapping ROI crop pixels (size×size) to frame pixels."""
    cx, cy, side, angle = roi
    s = side / size
    c, si = math.cos(angle) * s, math.sin(angle) * s
    # crop centre ((size-1)/2) maps to the ROI centre
    h = (size - 1) / 2
    return np.array([[c, -si, cx - c * h + si * h], [si, c, cy - si * h - c * h]], np.float64)


def head_pose(landmarks: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from face-mesh landmarks (pixels, z = depth).

    Builds the head's axes from the eye corners (left-right) and forehead-to-chin
    (up-down) in 3D and reads the angles off that rotation. Signs: see :class:`Face`.
    """
    p = landmarks.astype(np.float64)
    x = p[EYE_OUTER_RIGHT_IMG] - p[EYE_OUTER_LEFT_IMG]
    x /= np.linalg.norm(x) + 1e-12
    up = p[FOREHEAD] - p[CHIN]
    up -= x * (up @ x)
    up /= np.linalg.norm(up) + 1e-12
    roll = math.degrees(math.atan2(x[1], x[0]))
    yaw = math.degrees(math.asin(float(np.clip(x[2], -1, 1))))
    pitch = math.degrees(math.asin(float(np.clip(up[2], -1, 1)))) - _PITCH_OFFSET_DEG
    return yaw, pitch, roll


# The forehead-to-chin line of a frontal face leans back in the face mesh: the median raw
# pitch of the 283 LFW dev faces (news photos, mostly frontal) was -4.7 degrees; subtracting
# it makes a typical frontal face read 0.
_PITCH_OFFSET_DEG = -4.7


# --------------------------------------------------------------------------- model runs


def _pick_outputs(outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(regressors (896, 16), logits (896,)) from the detector's two outputs, by shape."""
    reg = next(o for o in outputs if o.shape[-1] == 16)
    log = next(o for o in outputs if o.shape[-1] == 1)
    return reg.reshape(-1, 16), log.reshape(-1)


def run_detector(model, image: np.ndarray, min_score: float = MIN_DETECTION_SCORE) -> list[Detection]:
    """Run BlazeFace on a whole RGB uint8 frame (letterboxed to 128×128).

    Returns detections in frame pixels (pixel centres at integer coordinates), best first.
    """
    h, w = image.shape[:2]
    square, s, ox, oy = letterbox(image, DETECTOR_SIZE)
    x = square.astype(np.float32)[None] * (2.0 / 255.0) - 1.0
    reg, logits = _pick_outputs(model.run(x))
    boxes, kps, scores = decode_detections(reg, logits, min_score)
    out = []
    nw, nh = w * s, h * s  # the frame's size in the square
    for box, kp, score in weighted_nms(boxes, kps, scores):
        # normalised square -> frame pixels (edge-based), then to centre-based
        bx = (box[[0, 2]] * DETECTOR_SIZE - ox) / nw * w - 0.5
        by = (box[[1, 3]] * DETECTOR_SIZE - oy) / nh * h - 0.5
        kx = (kp[:, 0] * DETECTOR_SIZE - ox) / nw * w - 0.5
        ky = (kp[:, 1] * DETECTOR_SIZE - oy) / nh * h - 0.5
        out.append(
            Detection(
                box=(float(bx[0]), float(by[0]), float(bx[1]), float(by[1])),
                score=score,
                keypoints=np.stack([kx, ky], axis=1).astype(np.float32),
            )
        )
    return out


def run_detector_scaled(
    model, image: np.ndarray, scale: float, min_score: float = MIN_DETECTION_SCORE
) -> list[Detection]:
    """Run BlazeFace once on the whole frame resized by ``scale`` (not letterboxed to 128).

    The detector is fully convolutional, so a ``scale`` of 128 / T searches the frame as
    densely as 128-px tiles of side T with no seams between tiles: a face of about
    0.15–0.7 × T pixels is found wherever it is. The input is padded (bottom/right, zeros)
    to multiples of 16. Returns detections in frame pixels, best first. Faces larger than
    about 100 input pixels are missed at this scale: use :func:`run_detector` for those.
    """
    h, w = image.shape[:2]
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    in_w, in_h = max(DETECTOR_SIZE, -(-nw // 16) * 16), max(DETECTOR_SIZE, -(-nh // 16) * 16)
    # sampled as letterbox() does (MediaPipe's way), so both passes see the same pixels
    m = np.array([[scale, 0.0, 0.0], [0.0, scale, 0.0]])
    square = cv2.warpAffine(image, m, (in_w, in_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    x = square.astype(np.float32)[None] * (2.0 / 255.0) - 1.0
    reg, logits = _pick_outputs(model.run(x))
    anchors = ssd_anchors_px(in_h, in_w)
    if reg.shape[0] != anchors.shape[0]:
        raise ValueError(
            f"detector returned {reg.shape[0]} anchors for a {in_w}x{in_h} input, "
            f"expected {anchors.shape[0]}"
        )
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100.0, 100.0)))
    keep = np.nonzero(scores >= min_score)[0]
    if keep.size == 0:
        return []
    raw = reg[keep].astype(np.float64)  # input pixels relative to the anchor centre
    anc = anchors[keep]
    cx, cy = raw[:, 0] + anc[:, 0], raw[:, 1] + anc[:, 1]
    boxes = np.stack([cx - raw[:, 2] / 2, cy - raw[:, 3] / 2, cx + raw[:, 2] / 2, cy + raw[:, 3] / 2], 1)
    kps = raw[:, 4:16].reshape(-1, 6, 2) + anc[:, None, :]
    sx = sy = scale
    out = []
    for box, kp, score in weighted_nms(boxes, kps, scores[keep]):
        # input pixels (edge-based) -> frame pixels (edge-based) -> centre-based
        out.append(
            Detection(
                box=(
                    float(box[0] / sx - 0.5), float(box[1] / sy - 0.5),
                    float(box[2] / sx - 0.5), float(box[3] / sy - 0.5),
                ),
                score=score,
                keypoints=np.stack([kp[:, 0] / sx - 0.5, kp[:, 1] / sy - 0.5], 1).astype(np.float32),
            )
        )
    return out


def run_landmarks(model, image: np.ndarray, roi: tuple[float, float, float, float]) -> tuple[np.ndarray, float]:
    """Run the face-mesh model on a rotated square ROI of an RGB uint8 frame.

    Returns ((468, 3) float32 landmarks in frame pixels, presence in [0, 1]).
    """
    m = roi_transform(roi, LANDMARK_SIZE)
    crop = cv2.warpAffine(
        image, m, (LANDMARK_SIZE, LANDMARK_SIZE),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
    )
    x = crop.astype(np.float32)[None] * (1.0 / 255.0)
    outputs = model.run(x)
    pts = next(o for o in outputs if o.size == 1404).reshape(468, 3).astype(np.float64)
    flag = float(next(o for o in outputs if o.size == 1).reshape(()))
    presence = 1.0 / (1.0 + math.exp(-max(-100.0, min(100.0, flag))))
    # model output: crop pixels (edge-based); convert to centre-based crop coordinates
    xy = pts[:, :2] - 0.5
    frame_xy = xy @ m[:, :2].T + m[:, 2]
    z = pts[:, 2] * (roi[2] / LANDMARK_SIZE)
    lm = np.concatenate([frame_xy, z[:, None]], axis=1).astype(np.float32)
    return lm, presence
