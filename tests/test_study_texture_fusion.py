"""Pure functions of tools/study_texture_fusion.py on synthetic numbers (no data, no models)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location(
    "study_texture_fusion", Path(__file__).resolve().parents[1] / "tools" / "study_texture_fusion.py")
S = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = S  # dataclasses look their module up
_spec.loader.exec_module(S)


def _probs(v2: float, v2m: float, se: float, sem: float) -> np.ndarray:
    """(2 models, 2 views, 3) softmax with the given P(real); the rest split over classes 0, 2."""
    p = np.zeros((2, 2, 3))
    for (i, j), r in {(0, 0): v2, (0, 1): v2m, (1, 0): se, (1, 1): sem}.items():
        p[i, j] = [(1 - r) / 2, r, (1 - r) / 2]
    return p


def test_variant_formulas():
    p = _probs(0.8, 0.6, 0.2, 0.4)
    assert S.score_a(p) == pytest.approx(0.5)
    assert S.score_b(p) == pytest.approx(0.5)
    assert S.score_c(p) == pytest.approx(0.2)
    assert S.score_d(p) == pytest.approx(0.4)
    assert S.score_e(p) == pytest.approx(0.3)  # min(mean(0.8, 0.6), mean(0.2, 0.4))
    assert S.score_f1(p) == pytest.approx(0.8)
    assert S.score_f2(p) == pytest.approx(0.2)
    assert set(S.VARIANTS) == {"A mean", "B flipTTA mean", "C min", "D geomean", "E flipTTA min",
                               "F1 V2 2.7x alone", "F2 V1SE 4.0x alone"}


def test_rule_threshold():
    assert S.rule_threshold([0.7, 0.5, 0.9], [0.1, 0.45, 0.6, 0.95]) == pytest.approx((0.5, 0.45, 0.475))
    # no attack below the lowest live score: H = 0
    assert S.rule_threshold([0.3], [0.3, 0.8]) == pytest.approx((0.3, 0.0, 0.15))


def test_band_width_maps_quantiles():
    a = np.linspace(0, 1, 100001)
    assert S.band_width(a, a, 0.46, 0.55) == pytest.approx(0.09, abs=1e-4)
    assert S.band_width(a, a / 2, 0.46, 0.55) == pytest.approx(0.045, abs=1e-4)
    assert S.band_width(a, a ** 2, 0.46, 0.55) == pytest.approx(0.55 ** 2 - 0.46 ** 2, abs=1e-4)


def test_auc():
    assert S.auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert S.auc([0.1], [0.9]) == 0.0
    assert S.auc([0.5], [0.5]) == 0.5
