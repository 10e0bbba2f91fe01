"""Review 3 (model paths): where a user's imported models are looked up.

``store._data_home`` ignores a relative ``$XDG_DATA_HOME`` (the XDG spec calls it invalid),
but ``embed.user_model_dir`` used it as given (0.2.1) — relative to the current directory.
With such an environment, ``faceunlock unlock alice`` run in a folder someone else controls
read ``./<rel>/faceunlock/models/<alice's embedder>/spec.json`` from there: that spec's
threshold (any value in (0, 1], e.g. 1e-9) then decided the match. Fixed in embed.py: a
relative ``$XDG_DATA_HOME`` is ignored there too.
"""

from __future__ import annotations


import pytest

from faceunlock import embed
from faceunlock.errors import ModelError


def test_relative_xdg_data_home_is_ignored_for_models(monkeypatch, tmp_path):
    monkeypatch.delenv("FACEUNLOCK_MODEL_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", "shared/share")
    monkeypatch.chdir(tmp_path)
    assert embed.user_model_dir() == tmp_path / "home" / ".local" / "share" / "faceunlock" / "models"


@pytest.mark.parametrize("bad", [0, 0.0, -1, -0.5, float("nan"), float("inf"), 1.5, "0.9", None])
def test_spec_threshold_outside_0_1_is_refused(tmp_path, bad):
    """Sound (checked, not a defect): 0, negatives, NaN, inf, > 1 and strings are refused
    when a spec is read; None means 'uncalibrated'."""
    import json

    d = tmp_path / "m"
    d.mkdir()
    data = embed.MOBILEFACENET.to_json() | {"name": "m", "file": str(embed.MOBILEFACENET.path), "source_sha256": "",
                                            "threshold": bad, "convenience_threshold": None}
    (d / embed.SPEC_FILE).write_text(json.dumps(data))
    if bad is None:
        assert embed.load_spec(d).threshold is None
        return
    with pytest.raises(ModelError):
        embed.load_spec(d)
