"""Input validation (ImageError naming the problem), grey/RGBA conversion, EXIF orientation."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DATA_DIR, box_iou

import faceunlock as fu

BAD_ARRAYS = {
    # name: (array, words one of which the message must contain)
    "float32": (np.zeros((64, 64, 3), np.float32), ("dtype", "uint8")),
    "float64": (np.full((64, 64, 3), 0.5), ("dtype", "uint8")),
    "nan": (np.full((64, 64, 3), np.nan, np.float32), ("non-finite", "nan")),
    "inf": (np.full((64, 64, 3), np.inf), ("non-finite", "inf")),
    "int16": (np.zeros((64, 64, 3), np.int16), ("dtype", "int16")),
    "uint16": (np.zeros((64, 64, 3), np.uint16), ("dtype", "uint16")),
    "bool": (np.zeros((64, 64, 3), bool), ("dtype", "bool")),
    "1d": (np.zeros((64,), np.uint8), ("shape", "(h, w")),
    "4d": (np.zeros((1, 64, 64, 3), np.uint8), ("shape", "(h, w")),
    "2 channels": (np.zeros((64, 64, 2), np.uint8), ("channel",)),
    "5 channels": (np.zeros((64, 64, 5), np.uint8), ("channel",)),
    "empty 0x0x3": (np.zeros((0, 0, 3), np.uint8), ("empty",)),
    "empty 0x10": (np.zeros((0, 10), np.uint8), ("empty",)),
}


@pytest.mark.parametrize("name", list(BAD_ARRAYS))
def test_bad_arrays(engine, name):
    arr, words = BAD_ARRAYS[name]
    for call in (fu.as_rgb, engine.detect, engine.template, engine.templates):
        with pytest.raises(fu.ImageError) as exc:
            call(arr)
        msg = str(exc.value).lower()
        assert any(w in msg for w in words), f"{name}: message {msg!r} names none of {words}"
        assert isinstance(exc.value, ValueError) and isinstance(exc.value, fu.FaceUnlockError)


@pytest.mark.parametrize("value", [[[0, 0, 0]], None, "image.jpg", 3, b"\xff\xd8"])
def test_non_arrays(engine, value):
    for call in (fu.as_rgb, engine.detect, engine.template):
        with pytest.raises(fu.ImageError) as exc:
            call(value)
        assert "numpy array" in str(exc.value)


def test_bad_files(tmp_path):
    jpeg = (DATA_DIR / "astronaut.jpg").read_bytes()
    cases = {
        "missing": (tmp_path / "nope.jpg", ("not found",)),
        "directory": (tmp_path, ("directory",)),
        "empty": (tmp_path / "empty.jpg", ("empty",)),
        "not an image": (tmp_path / "text.jpg", ("decode", "not an image")),
        "truncated jpeg": (tmp_path / "trunc.jpg", ("decode", "corrupt", "truncated")),
        "jpeg header only": (tmp_path / "head.jpg", ("decode", "corrupt", "truncated")),
    }
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_bytes(b"this is not an image\n" * 50)
    (tmp_path / "trunc.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (tmp_path / "head.jpg").write_bytes(jpeg[:600])
    for name, (path, words) in cases.items():
        with pytest.raises(fu.ImageError) as exc:
            fu.load_image(path)
        msg = str(exc.value).lower()
        assert any(w in msg for w in words), f"{name}: {msg!r}"
        assert str(path.name) in str(exc.value), f"{name}: message does not name the file"
        assert isinstance(exc.value, ValueError)


def test_grey_and_rgba_accepted(engine, astronaut):
    import cv2

    grey = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    grey3 = np.repeat(grey[:, :, None], 3, axis=2)
    ref = engine.detect(grey3)
    assert len(ref) == 1
    for img in (grey, grey[:, :, None]):
        out = fu.as_rgb(img)
        assert out.shape == astronaut.shape and out.dtype == np.uint8
        assert np.array_equal(out, grey3)
        faces = engine.detect(img)
        assert len(faces) == 1
        assert np.allclose(faces[0].landmarks, ref[0].landmarks, atol=1e-3)
        assert fu.similarity(engine.template(img), engine.template(grey3)) > 0.9999
    alpha = np.linspace(0, 255, astronaut.size // 3, dtype=np.uint8).reshape(astronaut.shape[:2])
    rgba = np.dstack([astronaut, alpha])
    assert np.array_equal(fu.as_rgb(rgba), astronaut)
    faces = engine.detect(rgba)
    base = engine.detect(astronaut)
    assert len(faces) == 1 and box_iou(faces[0].box, base[0].box) > 0.999
    assert fu.similarity(engine.template(rgba), engine.template(astronaut)) > 0.9999


def test_bgr_flag_and_non_contiguous(astronaut):
    bgr = np.ascontiguousarray(astronaut[:, :, ::-1])
    assert np.array_equal(fu.as_rgb(bgr, bgr=True), astronaut)
    view = astronaut[::2, ::2]
    out = fu.as_rgb(view)
    assert out.flags["C_CONTIGUOUS"] and np.array_equal(out, view)


def test_load_image_formats(tmp_path, astronaut):
    import cv2

    grey = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(tmp_path / "a.png"), astronaut[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "g.pgm"), grey)
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([astronaut[:, :, ::-1], np.full(grey.shape, 200, np.uint8)]))
    cv2.imwrite(str(tmp_path / "a16.png"), astronaut[:, :, ::-1].astype(np.uint16) * 257)
    assert np.array_equal(fu.load_image(tmp_path / "a.png"), astronaut)
    assert np.array_equal(fu.load_image(str(tmp_path / "g.pgm")), np.repeat(grey[:, :, None], 3, 2))
    assert np.array_equal(fu.load_image(tmp_path / "rgba.png"), astronaut)
    assert np.array_equal(fu.load_image(tmp_path / "a16.png"), astronaut)


# ------------------------------------------------------------------------ EXIF orientation


def _asymmetric_image() -> np.ndarray:
    """A 40×64 image that no flip or rotation maps to itself, with big flat blocks so that
    JPEG loss cannot hide a wrong orientation."""
    img = np.zeros((40, 64, 3), np.uint8)
    img[:, :] = (30, 30, 30)
    img[:16, :24] = (250, 40, 40)   # top-left red
    img[:16, 40:] = (40, 250, 40)   # top-right green
    img[24:, :24] = (40, 40, 250)   # bottom-left blue
    return img


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("byte_order", ["<", ">"])
def test_exif_orientation_matches_pil(tmp_path, orientation, byte_order):
    Image = pytest.importorskip("PIL.Image")
    ImageOps = pytest.importorskip("PIL.ImageOps")
    path = tmp_path / f"o{orientation}.jpg"
    pil = Image.fromarray(_asymmetric_image())
    exif = Image.Exif()
    exif[0x0112] = orientation
    if byte_order == ">":
        exif._endian = ">"  # big-endian (Motorola) TIFF header, as some cameras write
    pil.save(path, quality=95, exif=exif.tobytes())
    with Image.open(path) as im:
        assert im.getexif().get(0x0112) == orientation
        oracle = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    ours = fu.load_image(path)
    assert ours.shape == oracle.shape, f"orientation {orientation}: {ours.shape} vs PIL {oracle.shape}"
    assert ours.dtype == np.uint8 and ours.flags["C_CONTIGUOUS"]
    # the same decoder output up to JPEG decoder differences (libjpeg versions)
    assert np.abs(ours.astype(int) - oracle.astype(int)).mean() < 2.0
    assert np.abs(ours.astype(int) - oracle.astype(int)).max() < 40


def test_no_exif_and_png(tmp_path, astronaut):
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(astronaut).save(tmp_path / "plain.jpg", quality=95)
    out = fu.load_image(tmp_path / "plain.jpg")
    assert out.shape == astronaut.shape
    assert np.abs(out.astype(int) - astronaut.astype(int)).mean() < 3


def test_exif_rotated_portrait_detects_upright(engine, tmp_path, astronaut):
    """A phone photo stored sideways with orientation 6 comes out upright: roll ≈ 0."""
    Image = pytest.importorskip("PIL.Image")
    stored = np.ascontiguousarray(np.rot90(astronaut, 1))  # sensor data rotated 90° CCW
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(stored).save(tmp_path / "phone.jpg", quality=95, exif=exif.tobytes())
    img = fu.load_image(tmp_path / "phone.jpg")
    assert img.shape == astronaut.shape
    f = engine.detect(img)[0]
    assert abs(f.roll) < 10
    assert fu.similarity(engine.template(img), engine.template(astronaut)) >= fu.DEFAULT_THRESHOLD
