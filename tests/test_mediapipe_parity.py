"""Our BlazeFace decoding against MediaPipe's own FaceDetector (Tasks API) as the oracle.

Runs the same shipped ``face_detection_short_range.tflite`` through MediaPipe and through
faceunlock, on the bundled portraits and (when the dev data is present) LFW images and
multi-face group photos. Needs the optional ``mediapipe`` package; skipped without it.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_DIR, box_iou

import faceunlock as fu
from faceunlock import detect
from faceunlock.runtime import model_path

mp = pytest.importorskip("mediapipe")
pytest.importorskip("mediapipe.tasks.python.vision")

MIN_IOU = 0.9
MAX_SCORE_DIFF = 0.05


@pytest.fixture(scope="module")
def mp_detector():
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.FaceDetectorOptions(
        base_options=BaseOptions(model_asset_path=str(model_path("face_detection_short_range.tflite"))),
        min_detection_confidence=0.5,
    )
    detector = vision.FaceDetector.create_from_options(options)
    try:
        yield detector
    finally:
        detector.close()  # a never-closed FaceDetector prints a TypeError at exit


def _mp_boxes(detector, image: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
    result = detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
    out = []
    for d in result.detections:
        b = d.bounding_box
        out.append(((b.origin_x, b.origin_y, b.origin_x + b.width, b.origin_y + b.height), d.categories[0].score))
    return out


def _portraits() -> list[tuple[str, np.ndarray]]:
    """Images whose face fills a good part of the detector's 128-px input."""
    data = fu.__file__.replace("__init__.py", "data/")
    images = [(n, fu.load_image(data + n + ".jpg")) for n in ("astronaut", "grace_hopper")]
    if SHARED_DIR.is_dir():
        lfw = sorted((SHARED_DIR / "lfw_dev" / "images").glob("*/*_0001.jpg"))[::20][:8]
        images += [(p.name, fu.load_image(p)) for p in lfw]
    return images


def _group_photos() -> list[tuple[str, np.ndarray]]:
    if not SHARED_DIR.is_dir():
        pytest.skip("dev data (faceapi_bbt group photos) not present")
    return [(p.name, fu.load_image(p)) for p in sorted((SHARED_DIR / "faceapi_bbt" / "group_photos").glob("*.jpg"))]


def _compare(engine, detector, image):
    """(matched pairs, ours unmatched, theirs unmatched), matching by best IoU.

    Ours is the whole-frame pass (``detect.run_detector``), which is what MediaPipe does;
    ``engine.detections`` adds a finer-scale search when it finds nothing, on purpose."""
    det_model, _ = engine._models()
    ours = [(d.box, d.score) for d in detect.run_detector(det_model, image)]
    theirs = _mp_boxes(detector, image)
    pairs, left = [], list(range(len(ours)))
    unmatched_theirs = []
    for tb, ts in sorted(theirs, key=lambda x: -x[1]):
        best = max(left, key=lambda i: box_iou(ours[i][0], tb), default=None)
        if best is None or box_iou(ours[best][0], tb) < 0.3:
            unmatched_theirs.append((tb, ts))
            continue
        pairs.append((ours[best], (tb, ts)))
        left.remove(best)
    return pairs, [ours[i] for i in left], unmatched_theirs


def test_detector_parity_portraits(engine, mp_detector):
    images = _portraits()
    n_faces = 0
    for name, image in images:
        pairs, ours_only, theirs_only = _compare(engine, mp_detector, image)
        assert not ours_only and not theirs_only, f"{name}: ours only {ours_only}, mediapipe only {theirs_only}"
        for (ob, os_), (tb, ts) in pairs:
            iou = box_iou(ob, tb)
            assert iou >= MIN_IOU, f"{name}: IoU {iou:.3f}, ours {np.round(ob, 1)}, mediapipe {tb}"
            assert abs(os_ - ts) <= MAX_SCORE_DIFF, f"{name}: score {os_:.4f} vs mediapipe {ts:.4f}"
        n_faces += len(pairs)
    assert n_faces >= len(images)


# Multi-person photos with small faces (10–20 px in the 128-px input) are where resampling
# differences show: the same bar as for portraits holds because detect.letterbox samples the
# frame as MediaPipe's image-to-tensor step does. No face may be found by one side only.


def test_detector_parity_group_photos(engine, mp_detector):
    n_faces = 0
    for name, image in _group_photos():
        pairs, ours_only, theirs_only = _compare(engine, mp_detector, image)
        assert not ours_only and not theirs_only, f"{name}: unmatched {ours_only} / {theirs_only}"
        for (ob, os_), (tb, ts) in pairs:
            assert box_iou(ob, tb) >= MIN_IOU, f"{name}: IoU {box_iou(ob, tb):.3f}"
            assert abs(os_ - ts) <= MAX_SCORE_DIFF, f"{name}: score {os_:.4f} vs {ts:.4f}"
        n_faces += len(pairs)
    assert n_faces >= 8
def test_engine_detect_matches_mediapipe(engine, mp_detector, astronaut, grace_hopper):
    """The public detect() boxes (after the face mesh) are MediaPipe's boxes."""
    for image in (astronaut, grace_hopper):
        faces = engine.detect(image)
        theirs = _mp_boxes(mp_detector, image)
        assert len(faces) == len(theirs) == 1
        assert box_iou(faces[0].box, theirs[0][0]) >= MIN_IOU
        assert abs(faces[0].score - theirs[0][1]) <= MAX_SCORE_DIFF
