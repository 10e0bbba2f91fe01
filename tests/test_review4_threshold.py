"""Review 4 (usable threshold): ``FaceUnlock._usable_threshold`` (0.2.2) refuses an embedder
without a calibrated threshold before an attempt is charged. It accepted only Python
``int``/``float``: an :class:`EmbedderSpec` built in code with a NumPy threshold
(``np.float32(0.6)``, what a calibration computed with NumPy returns) unlocked in 0.2.1 and
was refused as "no calibrated threshold" in 0.2.2. Booleans, None, NaN and values outside
[-1, 1] must still be refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import faceunlock as fu
from faceunlock import embed
from faceunlock.errors import ModelError


def _unlocker(tmp_path, threshold):
    spec = dataclasses.replace(embed.MOBILEFACENET, threshold=threshold)
    store = fu.TemplateStore(tmp_path / "s.fus", key_file=tmp_path / "s.key")
    return fu.FaceUnlock(store, engine=fu.FaceEngine(threads=1, embedder=spec), liveness=False)


@pytest.mark.parametrize("t", [np.float32(0.75), np.float64(0.75), 0.75, np.int64(1)])
def test_numpy_thresholds_are_usable(tmp_path, t):
    assert _unlocker(tmp_path, t)._usable_threshold() == pytest.approx(float(t))


@pytest.mark.parametrize("t", [None, True, np.bool_(True), float("nan"), np.float32("nan"), 1.5, -2, "0.7"])
def test_unusable_thresholds_are_refused(tmp_path, t):
    with pytest.raises(ModelError, match="no calibrated"):
        _unlocker(tmp_path, t)._usable_threshold()
