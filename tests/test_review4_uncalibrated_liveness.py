"""Review 4 (uncalibrated imported model, liveness ON): review 3 made ``unlock`` and
``pam-auth`` refuse a model without calibrated thresholds with a clear error (exit 2,
nothing charged) — but its tests ran with ``--no-liveness``. With the liveness check on
(the default of both), ``FaceUnlock()`` builds ``Liveness(engine)``, whose identity
threshold is derived from the embedder's thresholds: ``float(None) - 0.05`` raised
TypeError first, reported as "unexpected TypeError". It must be the same clear ModelError.
The CLI and pam-auth cases are parametrized over liveness in test_review3_uncalibrated.py;
this file keeps the library's."""

from __future__ import annotations

import pytest

import faceunlock as fu
from faceunlock import embed
from faceunlock.errors import ModelError
from test_review3_uncalibrated import uncalibrated  # noqa: F401  (fixture)


def test_library_default_liveness(uncalibrated):  # noqa: F811
    spec = embed.load_spec(uncalibrated["spec_dir"])
    with pytest.raises(ModelError, match="no calibrated"):
        fu.FaceUnlock(uncalibrated["store"], engine=fu.FaceEngine(threads=1, embedder=spec))
    # an explicit identity threshold needs none of the embedder's (and liveness=False neither)
    live = fu.Liveness(fu.FaceEngine(threads=1, embedder=spec), identity_threshold=0.5)
    fu.FaceUnlock(uncalibrated["store"], engine=live.engine, liveness=live)
    fu.FaceUnlock(uncalibrated["store"], engine=fu.FaceEngine(threads=1, embedder=spec), liveness=False)
