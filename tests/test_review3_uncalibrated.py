"""Review 3 (uncalibrated imported model): ``models import`` of an unknown model writes a
spec without thresholds (and ``--force`` re-import rewrites a calibrated one that way).
``unlock``/``pam-auth`` for a user enrolled with it then charged a failed attempt and died
inside the match with "unexpected TypeError" (comparing a score with None) — every try
cost the owner an attempt towards the permanent lock. It must be a clear error (exit 2)
before the camera opens and before anything is charged."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import faceunlock as fu
from conftest import pam_call_environment, write_views
from faceunlock import cli, embed, pam
from faceunlock.errors import ModelError
from faceunlock.store import UserRecord

DATA = Path(fu.__file__).resolve().parent / "data"


@pytest.fixture()
def uncalibrated(tmp_path, monkeypatch):
    os.chmod(tmp_path, 0o755)
    models = tmp_path / "models"
    (models / "custom").mkdir(parents=True)
    src = embed.MOBILEFACENET
    shutil.copyfile(src.path, models / "custom" / "model.tflite")
    data = src.to_json() | {"name": "custom", "file": "model.tflite", "source_sha256": "",
                            "threshold": None, "convenience_threshold": None}
    (models / "custom" / embed.SPEC_FILE).write_text(json.dumps(data))
    monkeypatch.setenv("FACEUNLOCK_MODEL_DIR", str(models))
    sdir = tmp_path / "store"
    sdir.mkdir(mode=0o700)
    store = fu.TemplateStore(sdir / "s.fus", key_file=sdir / "s.key")
    v = np.ones(src.dim, np.float32) / np.sqrt(src.dim)
    store.put("alice", UserRecord(templates=np.stack([v] * 3), embedder="custom", created=1.0))
    astro = write_views(DATA / "astronaut.jpg", tmp_path / "astro", 2)
    return {"store": store, "s": sdir / "s.fus", "k": sdir / "s.key", "astro": astro, "spec_dir": models / "custom"}


# liveness off (review 3) and on, the default of both commands (review 4: with it on,
# ``Liveness(engine)`` derived its identity threshold from None first — "unexpected TypeError")
LIVENESS = pytest.mark.parametrize("liveness", [False, True], ids=["no-liveness", "liveness"])


@LIVENESS
def test_cli_unlock_with_an_uncalibrated_model_is_a_clear_error_and_charges_nothing(uncalibrated, capsys, liveness):
    u = uncalibrated
    rc = cli.main(["--store", str(u["s"]), "--key-file", str(u["k"]), "unlock", "alice",
                   "--source", str(u["astro"])] + ([] if liveness else ["--no-liveness"]))
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "unexpected" not in err and "threshold" in err, err
    assert u["store"].get("alice").failures == 0


@LIVENESS
def test_pam_with_an_uncalibrated_model_is_a_clear_error_and_charges_nothing(uncalibrated, monkeypatch, liveness):
    u = uncalibrated
    logged = pam_call_environment(monkeypatch)
    args = argparse.Namespace(config="/nonexistent/pam.conf", source=str(u["astro"]), seconds=10.0, level=None,
                              no_liveness=None if liveness else True, allow_remote=None, challenge=False, skip=0.0,
                              store=str(u["s"]), key_file=str(u["k"]))
    assert pam.run(args) == pam.EXIT_ERROR, logged
    assert "unexpected" not in logged[-1] and "threshold" in logged[-1], logged
    assert u["store"].get("alice").failures == 0


@pytest.mark.parametrize("method", ["unlock", "identify"])
def test_library_unlock_and_identify_refuse_an_uncalibrated_model_before_charging(uncalibrated, method):
    """The same through the library API: FaceUnlock.unlock / identify with an embedder whose
    threshold is None raise ModelError before the attempt is charged (0.2.1 charged it, then
    raised TypeError comparing a score with None)."""
    u = uncalibrated
    spec = embed.load_spec(u["spec_dir"])
    fu_ = fu.FaceUnlock(u["store"], engine=fu.FaceEngine(threads=1, embedder=spec), liveness=False)
    frames = [fu.load_image(p) for p in sorted(u["astro"].iterdir())]
    with pytest.raises(ModelError, match="no calibrated"):
        fu_.unlock("alice", frames) if method == "unlock" else fu_.identify(frames)
    assert u["store"].get("alice").failures == 0


def test_enrol_with_an_uncalibrated_model_is_a_clear_error_before_any_frame(uncalibrated):
    """FaceUnlock(liveness=False).enroll with an embedder that has no thresholds raised
    TypeError in the consistency check after reading every frame (0.2.2 before this fix);
    it is a ModelError before the first frame is read, and nothing is stored."""
    u = uncalibrated
    spec = embed.load_spec(u["spec_dir"])
    fu_ = fu.FaceUnlock(u["store"], engine=fu.FaceEngine(threads=1, embedder=spec), liveness=False)
    read = []

    def frames():
        for p in sorted(u["astro"].iterdir()):
            read.append(p)
            yield fu.load_image(p)

    with pytest.raises(ModelError, match="no calibrated"):
        fu_.enroll("bob", frames())
    assert read == [] and u["store"].get("bob") is None
