"""Pluggable embedders: specs, name/path resolution, the 112 alignment, the licence gate,
mixed-embedder refusal, and (when one was imported, as CI does) the insightface model."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

import faceunlock as fu
from faceunlock import align, embed
from faceunlock.embed import DLIB_RESNET, EmbedderSpec, load_spec, resolve_embedder, save_spec
from faceunlock.runtime import sha256_file

INSIGHTFACE_SHA = "9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f"


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    d = tmp_path / "models"
    monkeypatch.setenv("FACEUNLOCK_MODEL_DIR", str(d))
    return d


def _fake_import(model_dir: Path, name: str = "fake-embedder", **over) -> Path:
    """A spec.json folder whose model is the shipped dlib file (a real, loadable TFLite)."""
    folder = model_dir / name
    folder.mkdir(parents=True)
    model = folder / "model.tflite"
    model.write_bytes(DLIB_RESNET.path.read_bytes())
    spec = dataclasses.replace(DLIB_RESNET, name=name, file=str(model), sha256=sha256_file(model), source_sha256="0" * 64, **over)
    save_spec(spec, folder)
    return folder


# --------------------------------------------------------------------------- specs


def test_default_engine_threshold_is_default_threshold():
    e = fu.FaceEngine()
    assert e.embedder_spec is embed.MOBILEFACENET is embed.DEFAULT_EMBEDDER
    assert e.threshold == fu.DEFAULT_THRESHOLD == embed.MOBILEFACENET.threshold
    assert fu.CONVENIENCE_THRESHOLD == embed.MOBILEFACENET.convenience_threshold
    assert fu.FaceEngine(embedder="mobilefacenet-v1").embedder_spec is embed.MOBILEFACENET
    m = embed.MOBILEFACENET
    assert (m.alignment, m.input_size, m.dim, m.pixel_mean, m.pixel_scale, m.layout) == (
        "insightface-112", 112, 192, 127.5, 128.0, "NHWC")
    assert m.sha256 == sha256_file(m.path) and m.licence.startswith("Apache-2.0")
    # dlib's CC0 model stays shipped and selectable, with its own calibration
    d = fu.FaceEngine(embedder="dlib-resnet-v1")
    assert d.embedder_spec is DLIB_RESNET and d.threshold == DLIB_RESNET.threshold != fu.DEFAULT_THRESHOLD
    assert DLIB_RESNET.alignment == "dlib-150" and DLIB_RESNET.dim == 128 and DLIB_RESNET.licence.startswith("CC0")
    assert embed.known_model(DLIB_RESNET.source_sha256).threshold == DLIB_RESNET.threshold
    assert set(embed.SHIPPED_EMBEDDERS) == {"mobilefacenet-v1", "dlib-resnet-v1"}


def test_mobilefacenet_chip_is_rgb_normalised_and_batch_one(astronaut):
    """The default embedder is fed (rgb - 127.5) / 128 in RGB order, one chip at a time,
    and mirror-averaging is off (not chosen: docs/EMBEDDERS.md)."""
    e = embed.Embedder(embed.MOBILEFACENET, threads=1)
    chip = np.zeros((112, 112, 3), np.uint8)
    chip[..., 0] = 255
    x = e.prepare(chip)
    assert x.shape == (1, 112, 112, 3) and x.dtype == np.float32
    assert np.allclose(x[0, 0, 0], [(255 - 127.5) / 128, -127.5 / 128, -127.5 / 128])
    assert not embed.MOBILEFACENET.flip_average
    eng = fu.FaceEngine(threads=1)
    face = eng.detect(astronaut)[0]
    c = eng.chip(astronaut, face)
    assert c.shape == (112, 112, 3)
    t = e.embed(c)
    assert t.shape == (192,) and abs(float(np.linalg.norm(t)) - 1) < 1e-5
    # RGB, not BGR: swapping channels changes the template
    assert float(t @ e.embed(c[..., ::-1].copy())) < 0.999


def test_unlock_on_a_record_of_another_shipped_embedder_says_re_enrol(tmp_path, astronaut):
    """A store enrolled with 0.1.0's default (dlib) keeps working with a dlib engine, and the
    new default engine refuses it with one line naming both embedders and the fix."""
    store = fu.TemplateStore(tmp_path / "s.fus", key=os.urandom(32))
    old = fu.FaceUnlock(store, engine=fu.FaceEngine(threads=1, embedder="dlib-resnet-v1"), liveness=False)
    old.enroll("alice", [astronaut] * 6)
    assert store.get("alice").embedder == "dlib-resnet-v1"
    new = fu.FaceUnlock(store, engine=fu.FaceEngine(threads=1), liveness=False)
    with pytest.raises(fu.FaceUnlockError) as exc:
        new.unlock("alice", [astronaut] * 3)
    msg = str(exc.value)
    assert "\n" not in msg and "'dlib-resnet-v1'" in msg and "'mobilefacenet-v1'" in msg and "re-enrol" in msg
    assert "embedder='dlib-resnet-v1'" in msg  # how to keep the old model


def test_unknown_name_says_how_to_import(model_dir):
    with pytest.raises(fu.ModelError, match="faceunlock models import .*--name nope"):
        fu.FaceEngine(embedder="nope")


def test_resolve_by_name_dir_and_spec_path(model_dir):
    folder = _fake_import(model_dir)
    by_name = resolve_embedder("fake-embedder")
    assert by_name == resolve_embedder(folder) == resolve_embedder(folder / "spec.json")
    assert by_name.path == (folder / "model.tflite").resolve()
    assert [s.name for s in embed.imported_specs()] == ["fake-embedder"]
    spec = EmbedderSpec(name="x", file="y", input_size=112, dim=4, threshold=0.5, convenience_threshold=0.4)
    assert resolve_embedder(spec) is spec
    with pytest.raises(TypeError):
        resolve_embedder(42)  # type: ignore[arg-type]


def test_spec_json_round_trip_stores_relative_file(model_dir):
    folder = _fake_import(model_dir)
    data = json.loads((folder / "spec.json").read_text())
    assert data["format"] == embed.SPEC_FORMAT and data["file"] == "model.tflite"
    assert set(data) >= {"licence", "source_sha256", "sha256", "alignment", "layout", "pixel_mean", "pixel_scale"}


def test_bad_specs_are_model_errors(model_dir, tmp_path):
    folder = _fake_import(model_dir)
    data = json.loads((folder / "spec.json").read_text())
    for bad in ({"format": "other"}, {"alignment": "mtcnn-96"}, {"layout": "HWC"}):
        (folder / "spec.json").write_text(json.dumps({**data, **bad}))
        with pytest.raises(fu.ModelError):
            load_spec(folder)
    (folder / "spec.json").write_text("{not json")
    with pytest.raises(fu.ModelError):
        load_spec(folder)
    with pytest.raises(fu.ModelError):
        load_spec(tmp_path / "missing" / "spec.json")


def test_changed_model_file_is_refused_at_load(model_dir):
    folder = _fake_import(model_dir)
    e = fu.FaceEngine(embedder="fake-embedder")
    with open(folder / "model.tflite", "ab") as f:
        f.write(b"\0")
    with pytest.raises(fu.ModelError, match="sha256"):
        e.warm_up()


def test_uncalibrated_model_threshold_is_a_clear_error(model_dir):
    _fake_import(model_dir, threshold=None, convenience_threshold=None)
    e = fu.FaceEngine(embedder="fake-embedder")
    with pytest.raises(fu.ModelError, match="calibrate"):
        _ = e.threshold


def test_known_source_sha_calibration_wins_over_the_file(model_dir):
    folder = _fake_import(model_dir, threshold=0.123, convenience_threshold=0.1)
    data = json.loads((folder / "spec.json").read_text())
    data["source_sha256"] = INSIGHTFACE_SHA
    (folder / "spec.json").write_text(json.dumps(data))
    km = embed.known_model(INSIGHTFACE_SHA)
    spec = load_spec(folder)
    assert (spec.threshold, spec.convenience_threshold) == (km.threshold, km.convenience_threshold)


def test_prepare_normalises_and_lays_out():
    spec = dataclasses.replace(DLIB_RESNET, pixel_mean=127.5, pixel_scale=127.5, layout="NCHW", input_size=4)
    chip = np.full((4, 4, 3), 255, np.uint8)
    chip[..., 0] = 0
    x = embed.Embedder(spec).prepare(chip)
    assert x.shape == (1, 3, 4, 4) and x.dtype == np.float32
    assert np.allclose(x[0, 0], -1) and np.allclose(x[0, 1:], 1)
    assert embed.Embedder(DLIB_RESNET).prepare(chip).shape == (1, 4, 4, 3)


# --------------------------------------------------------------------------- mixed embedders


def test_unlock_refuses_templates_of_another_embedder(model_dir, tmp_path):
    from faceunlock.store import UserRecord

    _fake_import(model_dir)
    store = fu.TemplateStore(tmp_path / "s.fus", key=os.urandom(32))
    t = np.zeros((3, 128), np.float32)
    t[:, 0] = 1
    store.put("alice", UserRecord(templates=t, embedder="dlib-resnet-v1", created=0.0, meta={}))
    other = fu.FaceUnlock(store, engine=fu.FaceEngine(embedder="fake-embedder"))
    with pytest.raises(fu.FaceUnlockError, match="re-enrol"):
        other.unlock("alice", [np.zeros((64, 64, 3), np.uint8)])


# --------------------------------------------------------------------------- 112 alignment


def _random_similarity(rng):
    ang = rng.uniform(-0.6, 0.6)
    s = rng.uniform(0.5, 3.0)
    t = rng.uniform(-50, 300, 2)
    r = s * np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    return np.hstack([r, t[:, None]])


def test_112_transform_recovers_a_known_similarity():
    rng = np.random.default_rng(1)
    for _ in range(20):
        m = _random_similarity(rng)  # chip → image
        pts = align.INSIGHTFACE_TEMPLATE_112 @ m[:, :2].T + m[:, 2]
        inv = align.insightface_transform(pts)  # image → chip
        back = pts @ inv[:, :2].T + inv[:, 2]
        assert np.allclose(back, align.INSIGHTFACE_TEMPLATE_112, atol=1e-9)
        full = np.vstack([m, [0, 0, 1]]) @ np.vstack([inv, [0, 0, 1]])
        assert np.allclose(full, np.eye(3), atol=1e-9)


def test_112_chip_puts_the_points_on_the_template():
    """Paint five dots at known image points; the chip shows them at the template points."""
    rng = np.random.default_rng(2)
    m = _random_similarity(rng)
    m[:, :2] *= 2.5 / math.hypot(m[0, 0], m[1, 0])  # 2.5 image px per chip px
    m[:, 2] = (200, 180)
    pts = align.INSIGHTFACE_TEMPLATE_112 @ m[:, :2].T + m[:, 2]
    img = np.zeros((600, 600, 3), np.uint8)
    for k, (x, y) in enumerate(pts):
        cv2.circle(img, (int(round(x)), int(round(y))), 4, (50 * (k + 1), 255, 0), -1)
    chip = align.extract_chip_112(img, pts)
    assert chip.shape == (112, 112, 3) and chip.dtype == np.uint8
    for k, (x, y) in enumerate(align.INSIGHTFACE_TEMPLATE_112):
        xi, yi = int(round(x)), int(round(y))
        assert chip[yi, xi, 1] > 200, (k, chip[yi - 2 : yi + 3, xi - 2 : xi + 3, 1])
        assert abs(int(chip[yi, xi, 0]) - 50 * (k + 1)) <= 20


def test_insightface_map_from_mesh_landmarks():
    lm = np.zeros((468, 3))
    for i in align.MESH_EYE_IMAGE_LEFT:
        lm[i, :2] = (10, 20)
    for i in align.MESH_EYE_IMAGE_RIGHT:
        lm[i, :2] = (30, 20)
    lm[align.MESH_EYE_IMAGE_LEFT[0], :2] = (6, 20)  # corners: the centre is the mean of the contour
    lm[align.MESH_EYE_IMAGE_LEFT[8], :2] = (14, 20)
    lm[align.MESH_NOSE_TIP, :2] = (20, 30)
    lm[align.MESH_MOUTH_IMAGE_LEFT, :2] = (13, 40)
    lm[align.MESH_MOUTH_IMAGE_RIGHT, :2] = (27, 40)
    p = align.insightface_map().apply(lm)
    assert np.allclose(p, [(10, 20), (30, 20), (20, 30), (13, 40), (27, 40)])
    assert len(align.MESH_EYE_IMAGE_LEFT) == len(set(align.MESH_EYE_IMAGE_LEFT)) == 16


def test_aligned_chip_dispatches_and_rejects_unknown():
    img = np.zeros((300, 300, 3), np.uint8)
    lm = np.random.default_rng(0).uniform(100, 200, (468, 3))
    lm[align.MESH_EYE_IMAGE_LEFT, 0] -= 40
    lm[align.MESH_EYE_IMAGE_RIGHT, 0] += 40
    assert align.aligned_chip(img, lm, "insightface-112", 112).shape == (112, 112, 3)
    assert align.aligned_chip(img, lm, "dlib-150", 150).shape == (150, 150, 3)
    with pytest.raises(ValueError):
        align.aligned_chip(img, lm, "nope", 112)


# --------------------------------------------------------------------------- licence gate


def test_import_without_accept_license_prints_terms_and_writes_nothing(model_dir, tmp_path, monkeypatch, capsys):
    from faceunlock import model_import, models_cli

    src = tmp_path / "w600k_mbf.onnx"
    src.write_bytes(b"not really onnx")
    sha = sha256_file(src)
    km = dataclasses.replace(embed.known_model(INSIGHTFACE_SHA))
    monkeypatch.setitem(embed.KNOWN_MODELS, sha, km)
    called = []
    monkeypatch.setattr(model_import, "converter_python", lambda *a, **k: called.append(1))

    import argparse

    ap = argparse.ArgumentParser()
    models_cli.register(ap.add_subparsers(dest="command"))
    args = ap.parse_args(["models", "import", str(src), "--name", "insightface-mbf"])
    assert args.func(args) != 0
    out = capsys.readouterr()
    assert "NON-COMMERCIAL" in out.out and "--accept-license" in out.err
    assert not model_dir.exists() or not any(model_dir.iterdir())
    assert not called  # the gate comes before any conversion work

    with pytest.raises(model_import.LicenceNotAccepted):
        model_import.import_model(str(src), "x", say=lambda s: None)
    with pytest.raises(fu.ModelError, match="model name"):
        model_import.import_model(str(src), "dlib-resnet-v1", accept_license=True, say=lambda s: None)


def test_missing_conversion_tools_say_how_to_install(monkeypatch):
    from faceunlock import model_import

    monkeypatch.setattr(model_import, "CONVERTER_MODULES", ("surely_not_a_module_xyz",))
    with pytest.raises(fu.ModelError, match=r"faceunlock\[import\]"):
        model_import.converter_python()


# --------------------------------------------------------------------------- the imported model


def _imported_insightface():
    try:
        spec = resolve_embedder("insightface-mbf")
    except fu.ModelError:
        pytest.skip("insightface-mbf not imported into FACEUNLOCK_MODEL_DIR (CI imports it)")
    return spec


def test_imported_insightface_gives_512d_unit_templates():
    spec = _imported_insightface()
    assert spec.source_sha256 == INSIGHTFACE_SHA and spec.alignment == "insightface-112" and spec.dim == 512
    e = fu.FaceEngine(threads=1, embedder="insightface-mbf")
    data = Path(fu.__file__).parent / "data"
    a = e.template(fu.load_image(data / "astronaut.jpg"))
    b = e.template(fu.load_image(data / "frame_640x480.jpg"))
    c = e.template(fu.load_image(data / "grace_hopper.jpg"))
    assert a.shape == (512,) and a.dtype == np.float32
    assert abs(float(np.linalg.norm(a)) - 1) < 1e-5
    assert fu.similarity(a, b) >= e.threshold > fu.similarity(a, c)
    assert e.threshold == embed.known_model(INSIGHTFACE_SHA).threshold


SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "faces-dev"


@pytest.mark.slow
def test_imported_insightface_threshold_holds_on_dev_impostors():
    _imported_insightface()
    if not SHARED.is_dir():
        pytest.skip("no ../shared dev data")
    from faceunlock.evaluation import calibrate as C

    e = fu.FaceEngine(threads=1, embedder="insightface-mbf")
    ts, g, i, _ = C.run(e, [SHARED / "lfw_dev/images", SHARED / "orl_att_faces", SHARED / "faceapi_bbt"],
                        ("group_photos",), 0.3)
    assert i.size > 250_000
    assert (i >= e.threshold).sum() <= i.size / 50_000
