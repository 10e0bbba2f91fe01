"""Alignment on synthetic points: similarity transform, chip geometry, parity with dlib's chip."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from faceunlock import align


def _similarity(angle_deg, scale, tx, ty):
    a = math.radians(angle_deg)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), tx], [scale * math.sin(a), scale * math.cos(a), ty]])


def _apply(m, pts):
    return np.asarray(pts, np.float64) @ m[:, :2].T + m[:, 2]


@pytest.mark.parametrize("angle,scale,tx,ty", [(0, 1, 0, 0), (30, 2.5, 10, -4), (-170, 0.3, 300, 200), (90, 1.7, -50, 7)])
def test_similarity_transform_exact(angle, scale, tx, ty):
    rng = np.random.default_rng(3)
    src = rng.uniform(-100, 100, (7, 2))
    m = _similarity(angle, scale, tx, ty)
    est = align.similarity_transform(src, _apply(m, src))
    assert np.allclose(est, m, atol=1e-9)


def test_similarity_transform_least_squares_and_no_reflection():
    rng = np.random.default_rng(4)
    src = rng.uniform(-50, 50, (20, 2))
    m = _similarity(12, 1.3, 5, 6)
    noisy = _apply(m, src) + rng.normal(0, 0.5, src.shape)
    est = align.similarity_transform(src, noisy)
    assert np.allclose(est[:, :2], m[:, :2], atol=0.02) and np.allclose(est[:, 2], m[:, 2], atol=0.4)
    # a mirrored target cannot be matched by a reflection: determinant stays positive
    mirrored = _apply(m, src) * (-1, 1)
    est = align.similarity_transform(src, mirrored)
    assert np.linalg.det(est[:, :2]) >= 0
    with pytest.raises(ValueError):
        align.similarity_transform(np.ones((5, 2)), src[:5])


def test_dlib_template_values():
    t = align.dlib_template()
    assert t.shape == (5, 2)
    assert t[0, 0] == pytest.approx((0.25 + 0.8595674595992) / 1.5 * 150)
    assert t[4, 1] == pytest.approx((0.25 + 0.6277975316475) / 1.5 * 150)


def _dlib_chip_position(image_pts, m, size):
    """Where dlib's get_face_chip puts image points, written out from its definition: the
    least-squares transform ``m`` (chip -> image) fixes angle, scale s and centre m(size/2);
    the chip's pixel centres 0..size-1 span a source rectangle size·s − 1 pixels wide."""
    s = math.hypot(m[0, 0], m[1, 0])
    rot = m[:, :2] / s
    centre = _apply(m, [[size / 2, size / 2]])[0]
    k = (size * s - 1) / (size - 1)
    return (np.asarray(image_pts) - centre) @ rot / k + (size - 1) / 2


@pytest.mark.parametrize("angle,scale", [(0, 1.0), (25, 0.7), (-40, 1.6), (10, 3.1)])
def test_chip_puts_points_on_template(angle, scale):
    """Draw dots at the image positions of the template points under a known transform;
    in the chip, each dot's centroid must land where dlib's geometry puts it (within a
    pixel of the template point itself)."""
    size = 150
    template = align.dlib_template(size)
    m = _similarity(angle, scale, 0.0, 0.0)  # chip -> image
    m[:, 2] = np.array([260.0, 240.0]) - m[:, :2] @ np.array([75.0, 75.0])  # chip centre at (260, 240)
    pts = _apply(m, template)
    img = np.zeros((520, 520, 3), np.uint8)
    radius = max(3.0, 2.0 * scale)
    yy, xx = np.mgrid[0:520, 0:520]
    for p in pts:
        img[(xx - p[0]) ** 2 + (yy - p[1]) ** 2 <= radius**2] = 255
    chip = align.extract_chip(img, pts, size)
    assert chip.shape == (size, size, 3) and chip.dtype == np.uint8
    expected = _dlib_chip_position(pts, align.similarity_transform(template, pts), size)
    assert np.abs(expected - template).max() < 1.0
    grey = chip[:, :, 0].astype(np.float64)
    cy, cx = np.mgrid[0:size, 0:size]
    for p, e in zip(template, expected):
        win = ((cx - p[0]) ** 2 + (cy - p[1]) ** 2) <= (radius / scale + 3) ** 2
        w = grey * win
        assert w.sum() > 0, f"no dot near {p}"
        centroid = np.array([(w * cx).sum(), (w * cy).sum()]) / w.sum()
        assert np.linalg.norm(centroid - e) < 0.3, f"dot at {centroid}, expected {e}"
    # the chip transform sends the chip's middle pixel centre to the transform's centre
    ct = align.chip_transform(pts, size)
    assert np.allclose(_apply(ct, [[74.5, 74.5]]), [[260.0, 240.0]], atol=1e-6)


def test_chip_outside_image_is_black():
    img = np.full((100, 100, 3), 200, np.uint8)
    pts = align.dlib_template() + 1000
    chip = align.extract_chip(img, pts)
    assert chip.shape == (150, 150, 3) and not chip.any()


def test_chip_matches_dlib(astronaut):
    dlib = pytest.importorskip("dlib")
    frm = pytest.importorskip("face_recognition_models")
    from pathlib import Path

    predictor_path = None
    for loc in getattr(frm, "__path__", []):
        p = Path(loc) / "models" / "shape_predictor_5_face_landmarks.dat"
        if p.is_file():
            predictor_path = p
    if predictor_path is None:
        pytest.skip("no shape_predictor_5_face_landmarks.dat")
    predictor = dlib.shape_predictor(str(predictor_path))
    detector = dlib.get_frontal_face_detector()
    half = np.ascontiguousarray(cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA))
    rotated = np.ascontiguousarray(
        cv2.warpAffine(astronaut, cv2.getRotationMatrix2D((256, 256), 15, 1.0), (512, 512), borderMode=cv2.BORDER_REFLECT)
    )
    checked = 0
    for img in (astronaut, half, rotated, np.ascontiguousarray(astronaut[:, ::-1])):
        rects = detector(img, 1)
        if not rects:
            continue
        shape = predictor(img, rects[0])
        pts = np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], np.float64)
        ref = np.asarray(dlib.get_face_chip(img, shape, size=150, padding=0.25))
        ours = align.extract_chip(img, pts, 150, 0.25)
        diff = np.abs(ref.astype(int) - ours.astype(int))
        assert diff.max() <= 1, f"max diff {diff.max()}, mean {diff.mean():.3f}"
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize("name", sorted(align.INSIGHTFACE_MAPS))
def test_insightface_maps_are_affine_and_commute_with_similarity(name):
    """Every candidate five-point map is an affine combination of mesh landmarks (weights sum
    to 1), so mapping then moving the face equals moving then mapping."""
    m5 = align.INSIGHTFACE_MAPS[name]
    assert len(m5.indices) == 5 and all(abs(sum(w) - 1) < 1e-12 for w in m5.weights)
    assert all(0 <= i < 468 for idx in m5.indices for i in idx)
    rng = np.random.default_rng(5)
    lm = rng.uniform(0, 400, (468, 3))
    m = _similarity(17, 1.3, 40, -25)
    moved = lm.copy()
    moved[:, :2] = _apply(m, lm[:, :2])
    assert np.allclose(m5.apply(moved), _apply(m, m5.apply(lm)), atol=1e-9)
    # image-left eye left of image-right eye, mouth corners below the eyes on a real layout
    assert m5.name == name


def test_shipped_maps_differ_only_where_named():
    base = align.INSIGHTFACE_MAPS["contour16-nose4-mouth61"]
    assert base.indices == align.insightface_map().indices  # 0.1.0's default stays the default map
    shipped = align.INSIGHTFACE_MAPS["corners-nose1-mouth78"]
    assert shipped.indices[0] == (33, 133) and shipped.indices[1] == (263, 362)
    assert shipped.indices[2] == (1,) and shipped.indices[3:] == ((78,), (308,))


def test_engine_uses_the_spec_landmarks_map(astronaut):
    import dataclasses

    import faceunlock as fu
    from faceunlock import embed

    eng = fu.FaceEngine(threads=1)
    assert eng.embedder_spec.landmarks_map == "corners-nose1-mouth78"
    face = eng.detect(astronaut)[0]
    chip = eng.chip(astronaut, face)
    want = align.extract_chip_112(astronaut, align.INSIGHTFACE_MAPS["corners-nose1-mouth78"].apply(face.landmarks))
    assert np.array_equal(chip, want)
    other = fu.FaceEngine(threads=1, embedder=dataclasses.replace(embed.MOBILEFACENET, landmarks_map=""))
    assert not np.array_equal(other.chip(astronaut, face), chip)  # the map matters
