"""Review 4 (uncalibrated imported model, liveness ON): review 3 made ``unlock`` and
``pam-auth`` refuse a model without calibrated thresholds with a clear error (exit 2,
nothing charged) — but its tests ran with ``--no-liveness``. With the liveness check on
(the default of both), ``FaceUnlock()`` builds ``Liveness(engine)``, whose identity
threshold is derived from the embedder's thresholds: ``float(None) - 0.05`` raised
TypeError first, reported as "unexpected TypeError". It must be the same clear ModelError."""

from __future__ import annotations

import argparse

import pytest

import faceunlock as fu
from conftest import pam_call_environment
from faceunlock import cli, embed, pam
from faceunlock.errors import ModelError
from test_review3_uncalibrated import uncalibrated  # noqa: F401  (fixture)


def test_cli_unlock_with_liveness_on(uncalibrated, capsys):  # noqa: F811
    u = uncalibrated
    rc = cli.main(["--store", str(u["s"]), "--key-file", str(u["k"]), "unlock", "alice", "--source", str(u["astro"])])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "unexpected" not in err and "threshold" in err, err
    assert u["store"].get("alice").failures == 0


def test_pam_with_liveness_on(uncalibrated, monkeypatch):  # noqa: F811
    u = uncalibrated
    logged = pam_call_environment(monkeypatch)
    args = argparse.Namespace(config="/nonexistent/pam.conf", source=str(u["astro"]), seconds=10.0, level=None,
                              no_liveness=None, allow_remote=None, challenge=False, skip=0.0,
                              store=str(u["s"]), key_file=str(u["k"]))
    assert pam.run(args) == pam.EXIT_ERROR, logged
    assert "unexpected" not in logged[-1] and "threshold" in logged[-1], logged
    assert u["store"].get("alice").failures == 0


def test_library_default_liveness(uncalibrated):  # noqa: F811
    spec = embed.load_spec(uncalibrated["spec_dir"])
    with pytest.raises(ModelError, match="no calibrated"):
        fu.FaceUnlock(uncalibrated["store"], engine=fu.FaceEngine(threads=1, embedder=spec))
    # an explicit identity threshold needs none of the embedder's (and liveness=False neither)
    live = fu.Liveness(fu.FaceEngine(threads=1, embedder=spec), identity_threshold=0.5)
    fu.FaceUnlock(uncalibrated["store"], engine=live.engine, liveness=live)
    fu.FaceUnlock(uncalibrated["store"], engine=fu.FaceEngine(threads=1, embedder=spec), liveness=False)
