"""The whole pipeline on whichever runtime FACEUNLOCK_RUNTIME selects.

CI runs this file a second time in a venv with tflite-runtime and numpy<2 and
FACEUNLOCK_RUNTIME=tflite-runtime, proving the fallback path end to end.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import faceunlock as fu
from faceunlock import runtime
from faceunlock.demo import data_image, new_view


def test_runtime_selected_as_asked():
    want = os.environ.get("FACEUNLOCK_RUNTIME")
    name = runtime.runtime_name()
    if want:
        assert name == want
    else:
        assert name in ("ai-edge-litert", "tflite-runtime")


def test_pipeline_runs_and_decides_on_this_runtime():
    engine = fu.FaceEngine(threads=1)
    a = engine.template(data_image("astronaut"))
    b = engine.template(new_view(data_image("astronaut"), 10, 0.9, 0.85))
    g = engine.template(data_image("grace_hopper"))
    assert a.dtype == np.float32 and a.shape == (engine.embedder_spec.dim,)
    assert abs(float(np.linalg.norm(a)) - 1) < 1e-5
    assert fu.similarity(a, b) >= fu.DEFAULT_THRESHOLD > fu.similarity(a, g)
    for m in (engine._detector, engine._landmarker, engine._embedder.model):
        assert m.runtime == runtime.runtime_name()


def test_forcing_a_missing_fallback_names_it(monkeypatch):
    import sys

    monkeypatch.setenv("FACEUNLOCK_RUNTIME", "tflite-runtime")
    monkeypatch.setitem(sys.modules, "tflite_runtime", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    with pytest.raises(fu.RuntimeMissingError, match="tflite-runtime"):
        runtime.runtime_name()
