"""The public API contract: lazy loading, Face fields, ordering, templates, similarity, errors."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest
from conftest import rotate

import faceunlock as fu
from faceunlock import errors as fu_errors


def test_import_loads_no_runtime_or_model():
    code = (
        "import sys, faceunlock as fu\n"
        "e = fu.FaceEngine()\n"
        "assert e._detector is None and e._landmarker is None, 'engine loaded models at construction'\n"
        "assert e._embedder._model is None, 'embedder loaded at construction'\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ai_edge_litert', 'tflite_runtime', 'tensorflow'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_models_load_lazily_and_once(astronaut):
    engine = fu.FaceEngine(threads=1)
    assert engine._detector is None and engine._landmarker is None
    assert engine._embedder._model is None
    engine.detect(astronaut)
    det, lm = engine._detector, engine._landmarker
    assert det is not None and lm is not None
    assert engine._embedder._model is None, "detect() must not load the embedder"
    engine.template(astronaut)
    emb = engine._embedder._model
    assert emb is not None
    for _ in range(3):
        engine.detect(astronaut)
        engine.templates(astronaut)
    assert engine._detector is det and engine._landmarker is lm and engine._embedder._model is emb
    assert det.interpreter is engine._detector.interpreter


def test_face_fields(engine, astronaut):
    faces = engine.detect(astronaut)
    assert len(faces) == 1
    f = faces[0]
    assert isinstance(f, fu.Face)
    assert len(f.box) == 4 and all(isinstance(v, float) for v in f.box)
    x0, y0, x1, y1 = f.box
    h, w = astronaut.shape[:2]
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert 40 < f.width < 200 and 40 < f.height < 200
    assert isinstance(f.score, float) and 0.5 <= f.score <= 1.0
    assert isinstance(f.landmarks, np.ndarray)
    assert f.landmarks.shape == (468, 3) and f.landmarks.dtype == np.float32
    assert np.all(np.isfinite(f.landmarks))
    # landmarks lie on the face: inside the box grown by 30 %
    mx, my = 0.3 * f.width, 0.3 * f.height
    xy = f.landmarks[:, :2]
    assert np.all((xy[:, 0] > x0 - mx) & (xy[:, 0] < x1 + mx) & (xy[:, 1] > y0 - my) & (xy[:, 1] < y1 + my))
    for angle in (f.yaw, f.pitch, f.roll):
        assert isinstance(angle, float) and -90 <= angle <= 90
    # a frontal, upright portrait
    assert abs(f.yaw) < 15 and abs(f.pitch) < 20 and abs(f.roll) < 15


def _head(engine, image, face_width):
    """A square crop around the face of ``image`` (twice the face's size), scaled so that the
    face is ``face_width`` pixels wide."""
    import cv2

    f = engine.detect(image)[0]
    cx, cy, side = (f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2, 2.2 * f.width
    s = face_width / f.width
    m = np.array([[s, 0, side * s / 2 - cx * s], [0, s, side * s / 2 - cy * s]])
    n = int(round(side * s))
    return cv2.warpAffine(image, m, (n, n), borderMode=cv2.BORDER_REPLICATE)


@pytest.mark.parametrize("big_first", [True, False])
def test_largest_first_and_templates_order(engine, astronaut, grace_hopper, big_first):
    big, small = _head(engine, grace_hopper, 120), _head(engine, astronaut, 75)
    canvas = np.full((320, 480, 3), 90, np.uint8)
    left, right = (big, small) if big_first else (small, big)
    canvas[10 : 10 + left.shape[0], 10 : 10 + left.shape[1]] = left
    canvas[40 : 40 + right.shape[0], 470 - right.shape[1] : 470] = right
    faces = engine.detect(canvas)
    assert len(faces) == 2
    areas = [f.width * f.height for f in faces]
    assert areas[0] > 1.5 * areas[1]
    # the largest face is Grace Hopper's, wherever she is
    centre_x = (faces[0].box[0] + faces[0].box[2]) / 2
    assert (centre_x < 240) == big_first

    ts = engine.templates(canvas)
    assert len(ts) == 2
    t_gh, t_as = engine.template(grace_hopper), engine.template(astronaut)
    assert fu.similarity(ts[0], t_gh) >= fu.DEFAULT_THRESHOLD > fu.similarity(ts[0], t_as)
    assert fu.similarity(ts[1], t_as) >= fu.DEFAULT_THRESHOLD > fu.similarity(ts[1], t_gh)
    # template() is the template of detect()[0]; templates() follow detect() order
    assert fu.similarity(engine.template(canvas), ts[0]) > 0.9999
    for t, f in zip(ts, faces):
        assert fu.similarity(t, engine.face_template(canvas, f)) > 0.9999


def test_template_dtype_shape_norm(engine, astronaut, grace_hopper):
    for img in (astronaut, grace_hopper):
        t = engine.template(img)
        assert isinstance(t, np.ndarray)
        assert t.dtype == np.float32 and t.shape == (engine.embedder_spec.dim,)
        assert np.all(np.isfinite(t))
        assert abs(float(np.linalg.norm(t)) - 1.0) < 1e-5
    ts = engine.templates(astronaut)
    assert len(ts) == 1 and ts[0].dtype == np.float32 and ts[0].shape == (engine.embedder_spec.dim,)


def test_templates_deterministic(engine, astronaut):
    a, b = engine.template(astronaut), engine.template(astronaut.copy())
    assert np.array_equal(a, b)


def test_similarity_properties(engine, astronaut, grace_hopper):
    a, g = engine.template(astronaut), engine.template(grace_hopper)
    s = fu.similarity(a, g)
    assert isinstance(s, float) and -1.0 <= s <= 1.0
    assert s == pytest.approx(fu.similarity(g, a), abs=1e-12)
    assert fu.similarity(a, a) == pytest.approx(1.0, abs=1e-6)
    assert fu.similarity(a, -a) == pytest.approx(-1.0, abs=1e-6)
    assert fu.similarity(a, 3.0 * a) == pytest.approx(1.0, abs=1e-6)  # scale-free
    with pytest.raises(ValueError):
        fu.similarity(a, a[:64])
    with pytest.raises(ValueError):
        fu.similarity(a, np.zeros_like(a))
    with pytest.raises(ValueError):
        fu.similarity(a, np.full_like(a, np.nan))


def test_thresholds_sane():
    assert 0.0 < fu.CONVENIENCE_THRESHOLD <= fu.DEFAULT_THRESHOLD < 1.0


@pytest.mark.parametrize("angle,scale,gain", [(0, 1.0, 1.0), (12, 0.9, 0.8), (-8, 1.1, 1.2), (20, 0.7, 0.6)])
def test_same_person_new_view_matches(engine, astronaut, angle, scale, gain):
    view = rotate(astronaut, angle, scale)
    view = np.clip(view.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    s = fu.similarity(engine.template(astronaut), engine.template(view))
    assert s >= fu.DEFAULT_THRESHOLD, f"same person scored {s:.4f}"


def test_different_people_rejected(engine, astronaut, grace_hopper):
    s = fu.similarity(engine.template(astronaut), engine.template(grace_hopper))
    assert s < fu.DEFAULT_THRESHOLD, f"different people scored {s:.4f}"


@pytest.mark.parametrize("kind", ["black", "grey", "white", "noise", "gradient"])
def test_no_face(engine, kind):
    rng = np.random.default_rng(7)
    img = {
        "black": np.zeros((480, 640, 3), np.uint8),
        "grey": np.full((480, 640, 3), 128, np.uint8),
        "white": np.full((480, 640, 3), 255, np.uint8),
        "noise": rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
        "gradient": np.repeat(np.linspace(0, 255, 640, dtype=np.uint8)[None, :, None], 480, 0).repeat(3, 2),
    }[kind]
    assert engine.detect(img) == []
    assert engine.templates(img) == []
    with pytest.raises(fu.NoFaceError):
        engine.template(img)
    with pytest.raises(fu.FaceUnlockError):
        engine.template(img)


def test_all_exceptions_subclass_base():
    classes = [c for _, c in inspect.getmembers(fu_errors, inspect.isclass) if issubclass(c, Exception)]
    assert len(classes) >= 9
    for c in classes:
        assert issubclass(c, fu.FaceUnlockError), c
    for name in fu_errors.__all__:
        assert getattr(fu, name) is getattr(fu_errors, name)
    assert issubclass(fu.ImageError, ValueError)
    assert issubclass(fu.RuntimeMissingError, ImportError)


def test_engine_rejects_bad_threads():
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises(ValueError):
            fu.FaceEngine(threads=bad)


def test_public_names():
    for name in ("load_image", "FaceEngine", "Face", "similarity", "DEFAULT_THRESHOLD", "FaceUnlockError",
                 "NoFaceError", "ImageError", "RuntimeMissingError"):
        assert name in fu.__all__ and hasattr(fu, name)


def test_demo_returns_zero(engine):
    from faceunlock import demo

    lines: list[str] = []
    assert demo.run(engine, say=lines.append) == 0
    assert any("GRANTED" in line for line in lines) and any("DENIED" in line for line in lines)
