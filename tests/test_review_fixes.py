"""Fail-closed fixes from the 0.2.0 review: stored embedder names never resolve as paths,
specs cannot carry nonsense thresholds, identify() honours require_challenge, and
re-enrolment keeps the lockout state."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

import faceunlock as fu
from faceunlock import embed
from faceunlock.errors import ModelError


def test_stored_embedder_name_is_never_a_path(tmp_path, monkeypatch):
    # an attacker's spec in the current directory, named like an imported model
    evil = tmp_path / "cwd" / "insightface-mbf"
    evil.mkdir(parents=True)
    spec = embed.MOBILEFACENET.to_json() | {"name": "insightface-mbf", "threshold": 0.01, "convenience_threshold": 0.01,
                                            "file": str(embed.MOBILEFACENET.path), "sha256": ""}
    (evil / embed.SPEC_FILE).write_text(json.dumps(spec))
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("FACEUNLOCK_MODEL_DIR", str(tmp_path / "models"))
    assert embed.resolve_embedder("insightface-mbf").threshold == 0.01  # an explicit name/path the caller chose
    with pytest.raises(ModelError):
        embed.embedder_for_record("insightface-mbf")  # a name read from a store: never from the cwd
    for bad in ("../insightface-mbf", str(evil), "a/b", ""):
        with pytest.raises(ModelError):
            embed.embedder_for_record(bad)
    assert embed.embedder_for_record("mobilefacenet-v1") is embed.MOBILEFACENET


@pytest.mark.parametrize("thr,conv", [(-1.0, 0.5), (0.0, 0.0), (1.5, 0.5), (0.5, 0.7), (float("nan"), 0.5)])
def test_spec_thresholds_must_be_plausible(tmp_path, thr, conv):
    d = tmp_path / "m"
    d.mkdir()
    spec = embed.MOBILEFACENET.to_json() | {"name": "custom", "threshold": thr, "convenience_threshold": conv,
                                            "file": str(embed.MOBILEFACENET.path)}
    (d / embed.SPEC_FILE).write_text(json.dumps(spec))
    with pytest.raises(ModelError):
        embed.load_spec(d)


def _store(tmp_path) -> fu.TemplateStore:
    d = tmp_path / "s"
    d.mkdir(mode=0o700)
    return fu.TemplateStore(d / "s.fus", key_file=d / "k.key")


def test_identify_refuses_when_the_policy_requires_a_challenge(tmp_path):
    u = fu.FaceUnlock(_store(tmp_path), policy=fu.Policy(require_challenge=True))
    with pytest.raises(fu.FaceUnlockError, match="challenge"):
        u.identify([])


def _views(image: np.ndarray, n: int) -> list[np.ndarray]:
    h, w = image.shape[:2]
    return [cv2.warpAffine(image, cv2.getRotationMatrix2D((w / 2, h / 2), -6 + 4 * i, 0.95 + 0.02 * i), (w, h),
                           borderMode=cv2.BORDER_REFLECT) for i in range(n)]


def test_reenrolment_keeps_the_lockout(tmp_path, engine, astronaut):
    store = _store(tmp_path)
    policy = fu.Policy(enroll_min_templates=2, enroll_max_templates=3)
    u = fu.FaceUnlock(store, engine=engine, liveness=False, policy=policy)
    u.enroll("alice", _views(astronaut, 3))
    store.update("alice", lambda r: __import__("dataclasses").replace(r, failures=20, permanent_lock=True))
    u.enroll("alice", _views(astronaut, 3))  # not an append: new templates
    rec = store.get("alice")
    assert rec.permanent_lock and rec.failures == 20
    assert u.unlock("alice", [astronaut]).reason == fu.Reason.LOCKED_OUT
