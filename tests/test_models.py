"""Shipped models: sha256 as documented, loadable; the runtime shim's missing-runtime error."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

import faceunlock as fu
from faceunlock import runtime

MODELS_DIR = Path(fu.__file__).resolve().parent / "models"


def _documented_sha256() -> dict[str, str]:
    """file -> shipped sha256 from the first table of MODELS.md ('same file, unchanged' means
    the source sha256)."""
    text = (MODELS_DIR / "MODELS.md").read_text()
    out = {}
    header = None
    for line in text.splitlines():
        if not line.startswith("|"):
            if header:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if set("".join(cells)) <= set("-: "):
            continue
        row = dict(zip(header, cells))
        name = row["file"].strip("`")
        shipped = row["shipped sha256"]
        source = row["source sha256"]
        m = re.search(r"[0-9a-f]{64}", shipped) or re.search(r"[0-9a-f]{64}", source)
        assert m, f"no sha256 for {name}"
        out[name] = m.group(0)
    return out


def test_models_md_covers_every_shipped_model():
    documented = _documented_sha256()
    shipped = sorted(p.name for p in MODELS_DIR.glob("*.tflite"))
    assert shipped, "no .tflite shipped"
    assert sorted(documented) == shipped


@pytest.mark.parametrize("name", sorted(p.name for p in MODELS_DIR.glob("*.tflite")))
def test_model_sha256_and_load(name):
    path = MODELS_DIR / name
    assert runtime.sha256_file(path) == _documented_sha256()[name]
    model = runtime.load_model(path, threads=1)
    assert model.runtime in ("ai-edge-litert", "tflite-runtime")
    inputs = [np.zeros(d["shape"], d["dtype"]) for d in model.input_details]
    outputs = model.run(*inputs)
    assert len(outputs) == len(model.output_details)
    assert all(np.all(np.isfinite(o)) for o in outputs)


def test_model_shapes():
    det = runtime.load_model(runtime.model_path("face_detection_short_range.tflite"))
    assert tuple(det.input_details[0]["shape"]) == (1, 128, 128, 3)
    assert sorted(tuple(d["shape"]) for d in det.output_details) == [(1, 896, 1), (1, 896, 16)]
    lm = runtime.load_model(runtime.model_path("face_landmark.tflite"))
    assert tuple(lm.input_details[0]["shape"]) == (1, 192, 192, 3)
    emb = runtime.load_model(runtime.model_path("dlib_resnet_v1_fp16.tflite"))
    assert tuple(emb.input_details[0]["shape"]) == (1, 150, 150, 3)
    assert tuple(emb.output_details[0]["shape"]) == (1, 128)
    mfn = runtime.load_model(runtime.model_path("mobilefacenet_v1.tflite"))
    assert tuple(mfn.input_details[0]["shape"]) == (1, 112, 112, 3)
    assert tuple(mfn.output_details[0]["shape"]) == (1, 192)


MFN_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "models" / "mobilefacenet" / "MobileFaceNet.tflite"


def test_mobilefacenet_batch1_bit_identical_to_source():
    """The shipped batch-1 file gives exactly row 0 of the batch-2 source's output."""
    if not MFN_SOURCE.is_file():
        pytest.skip(f"source model not found: {MFN_SOURCE}")
    assert runtime.sha256_file(MFN_SOURCE) == fu.embed.MOBILEFACENET.source_sha256
    assert runtime.sha256_file(runtime.model_path("mobilefacenet_v1.tflite")) == fu.embed.MOBILEFACENET.sha256
    src = runtime.load_model(MFN_SOURCE, threads=1)
    one = runtime.load_model(runtime.model_path("mobilefacenet_v1.tflite"), threads=1)
    assert tuple(src.input_details[0]["shape"]) == (2, 112, 112, 3)
    rng = np.random.default_rng(7)
    x = ((rng.integers(0, 256, (3, 112, 112, 3)) - 127.5) / 128).astype(np.float32)
    for i in range(2):
        got = one.run(x[i : i + 1])[0]
        want = src.run(x[i : i + 2])[0]
        assert np.array_equal(got[0], want[0])
        assert not np.array_equal(got[0], src.run(x[[2, i]])[0][0])  # the check can fail


def test_missing_and_corrupt_model_files(tmp_path):
    with pytest.raises(fu.ModelError):
        runtime.load_model(tmp_path / "missing.tflite")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer" * 10)
    with pytest.raises(fu.ModelError):
        runtime.load_model(bad)


def test_no_runtime_raises_runtime_missing(monkeypatch):
    for mod in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime", "tflite_runtime.interpreter"):
        monkeypatch.setitem(sys.modules, mod, None)  # makes `import mod` raise ImportError
    monkeypatch.delenv("FACEUNLOCK_RUNTIME", raising=False)
    with pytest.raises(fu.RuntimeMissingError) as exc:
        runtime.load_model(runtime.model_path("face_detection_short_range.tflite"))
    msg = str(exc.value)
    assert "ai-edge-litert" in msg and "tflite-runtime" in msg
    assert isinstance(exc.value, ImportError) and isinstance(exc.value, fu.FaceUnlockError)
    # and the engine surfaces the same error on first use
    with pytest.raises(fu.RuntimeMissingError):
        fu.FaceEngine().detect(np.zeros((64, 64, 3), np.uint8))
