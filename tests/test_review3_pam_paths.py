"""Review 3 (pam-auth paths, as root): what pam-auth reads must be what it checked, and
where it looks must not come from the caller.

1. The ownership check of an imported embedder's spec looks at
   ``user_model_dir()/NAME/spec.json`` and then the spec is read again BY NAME. When any
   directory on that path can be changed by another user (a symlink ``NAME`` in their
   folder pointing at root's real model folder), they re-point it between the check and
   the read: root's spec is checked, theirs (threshold 0.01) decides. Simulated here by
   re-pointing the link right after the check returns (what a winning race does).
2. The same for the store and key files: only the file and the folder of the NAME given
   are checked, not the folder the name resolves to nor the folders above it.
3. Under sudo/su, pam_exec runs pam-auth with euid 0 but the CALLER's real uid and without
   HOME; Python's ``Path.home()`` then falls back to the real uid's home, so the imported
   models of root are looked up in the caller's home (and in HOME/XDG_DATA_HOME when the
   PAM environment carries them). As root, pam-auth must use root's own folders.
"""

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
from faceunlock import embed, pam
from faceunlock.store import UserRecord

pytestmark = pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0,
                                reason="pam-auth's ownership checks apply as root only")

DATA = Path(fu.__file__).resolve().parent / "data"


def _model_folder(folder: Path, threshold: float) -> Path:
    """An 'imported' model named custom: the shipped MobileFaceNet weights and spec."""
    folder.mkdir(parents=True)
    src = embed.MOBILEFACENET
    shutil.copyfile(src.path, folder / "model.tflite")
    data = src.to_json() | {"name": "custom", "file": "model.tflite", "source_sha256": "",
                            "threshold": threshold, "convenience_threshold": min(threshold, src.convenience_threshold)}
    (folder / embed.SPEC_FILE).write_text(json.dumps(data))
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("pam3")
    os.chmod(d, 0o755)
    legit = _model_folder(d / "rootmodels" / "custom", embed.MOBILEFACENET.threshold)
    evil = _model_folder(d / "anyone" / "evil-custom", 0.01)
    os.chmod(d / "anyone", 0o777)  # another user's (or everyone's) folder
    astro = write_views(DATA / "astronaut.jpg", d / "astro")
    hopper = write_views(DATA / "grace_hopper.jpg", d / "hopper", 3)
    spec = embed.load_spec(legit)
    engine = fu.FaceEngine(threads=1, embedder=spec)
    tpl = []
    for p in sorted(astro.iterdir()):
        img = fu.load_image(p)
        tpl.append(engine.face_template(img, engine.detect(img)[0]))
    sdir = d / "store"
    sdir.mkdir(mode=0o700)
    store = fu.TemplateStore(sdir / "s.fus", key_file=sdir / "s.key")
    store.put("alice", UserRecord(templates=np.stack(tpl).astype(np.float32), embedder="custom", created=1.0))
    return {"d": d, "legit": legit, "evil": evil, "astro": astro, "hopper": hopper,
            "store": sdir / "s.fus", "key": sdir / "s.key"}


@pytest.fixture()
def env(monkeypatch, tmp_path):
    return pam_call_environment(monkeypatch, also_unset=("FACEUNLOCK_MODEL_DIR", "XDG_DATA_HOME"))


def _args(setup, source: Path, **kw) -> argparse.Namespace:
    a = dict(config="/nonexistent/pam.conf", source=str(source), seconds=30.0, level=None, no_liveness=True,
             allow_remote=None, challenge=False, skip=0.0, store=str(setup["store"]), key_file=str(setup["key"]))
    a.update(kw)
    return argparse.Namespace(**a)


def test_control_root_models_deny_a_stranger_and_admit_the_owner(setup, env, monkeypatch):
    monkeypatch.setenv("FACEUNLOCK_MODEL_DIR", str(setup["legit"].parent))
    assert pam.run(_args(setup, setup["hopper"])) == pam.EXIT_DENIED, env
    assert pam.run(_args(setup, setup["astro"])) == pam.EXIT_GRANTED, env


def test_spec_swapped_after_its_check_is_not_read(setup, env, monkeypatch):
    """A link in a world-writable model folder points at root's real model folder when
    checked, at the caller's spec (threshold 0.01) when read: a stranger must stay denied."""
    mdir = setup["d"] / "anyone" / "models"
    shutil.rmtree(mdir, ignore_errors=True)
    mdir.mkdir()
    os.chmod(mdir, 0o777)
    link = mdir / "custom"
    link.symlink_to(setup["legit"])
    monkeypatch.setenv("FACEUNLOCK_MODEL_DIR", str(mdir))
    real_check = pam._check_owner

    def racing_check(path, what, **kw):
        out = real_check(path, what, **kw)
        if what == "embedder spec":  # the race won: re-point the link after the check
            link.unlink()
            link.symlink_to(setup["evil"])
        return out

    monkeypatch.setattr(pam, "_check_owner", racing_check)
    try:
        rc = pam.run(_args(setup, setup["hopper"]))
    finally:
        link.unlink()
    assert rc != pam.EXIT_GRANTED, env
    monkeypatch.setattr(pam, "_check_owner", real_check)


def test_store_behind_a_symlink_into_a_writable_folder_is_refused(setup, env, monkeypatch, tmp_path):
    """--store names a link in a root-only folder; the file it resolves to is root's 0600
    but sits in a folder anyone can write (it can be swapped or rolled back): refused."""
    monkeypatch.setenv("FACEUNLOCK_MODEL_DIR", str(setup["legit"].parent))
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    shutil.copy2(setup["store"], open_dir / "s.fus")
    os.chmod(open_dir / "s.fus", 0o600)
    safe = tmp_path / "safe"
    safe.mkdir(mode=0o700)
    (safe / "s.fus").symlink_to(open_dir / "s.fus")
    assert pam.run(_args(setup, setup["astro"], store=str(safe / "s.fus"))) == pam.EXIT_ERROR, env
    assert "refusing" in env[-1], env


@pytest.mark.parametrize("what", ["key", "store"])
def test_file_in_a_folder_under_a_writable_folder_is_refused(setup, env, monkeypatch, tmp_path, what):
    """The file's own folder is root's 0700, but the folder above it anyone can write: the
    whole folder can be renamed away and replaced. Refused. (The store case grants on 0.2.1,
    ``score=0.9990``: TemplateStore's own check looks at the store's folder only — review 4.)"""
    monkeypatch.setenv("FACEUNLOCK_MODEL_DIR", str(setup["legit"].parent))
    top = tmp_path / "open"
    top.mkdir()
    os.chmod(top, 0o777)
    (top / what).mkdir(mode=0o700)
    name = {"key": "s.key", "store": "s.fus"}[what]
    shutil.copy2(setup[what], top / what / name)
    os.chmod(top / what / name, 0o600)
    flag = {"key": "key_file", "store": "store"}[what]
    assert pam.run(_args(setup, setup["astro"], **{flag: str(top / what / name)})) == pam.EXIT_ERROR, env
    assert "refusing" in env[-1] and str(top) in env[-1], env


def test_models_are_root_own_not_from_home_or_xdg(setup, env, monkeypatch, tmp_path):
    """HOME / XDG_DATA_HOME in pam-auth's environment (pam_env, or Python's fallback to the
    real uid's home under sudo/su) must not choose root's imported models."""
    caller = tmp_path / "caller"
    models = caller / ".local" / "share" / "faceunlock" / "models"
    models.mkdir(parents=True)
    shutil.copytree(setup["evil"], models / "custom")
    root_home = tmp_path / "roothome"
    (root_home / ".local" / "share" / "faceunlock" / "models").mkdir(parents=True)
    shutil.copytree(setup["legit"], root_home / ".local" / "share" / "faceunlock" / "models" / "custom")
    monkeypatch.setattr(pam, "_root_home", lambda: str(root_home), raising=False)
    monkeypatch.setenv("HOME", str(caller))
    assert pam.run(_args(setup, setup["hopper"])) == pam.EXIT_DENIED, env
    monkeypatch.delenv("HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(caller / ".local" / "share"))
    assert pam.run(_args(setup, setup["hopper"])) == pam.EXIT_DENIED, env
    assert pam.run(_args(setup, setup["astro"])) == pam.EXIT_GRANTED, env
    assert os.environ.get("XDG_DATA_HOME") == str(caller / ".local" / "share")  # the caller's env is restored


def test_missing_config_in_a_folder_others_can_write_is_refused(setup, env, monkeypatch, tmp_path):
    """A missing config means the defaults — unless someone else can create it between the
    check and the read (here: right after the check, as a winning race would): its
    ``liveness = no`` would then let a photo in. A missing config whose folder others can
    write is refused."""
    monkeypatch.setenv("FACEUNLOCK_MODEL_DIR", str(setup["legit"].parent))
    open_dir = tmp_path / "etc-open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    conf = open_dir / "pam.conf"
    real_check = pam._check_owner

    def racing_check(path, what, **kw):
        out = real_check(path, what, **kw)
        if what == "config file" and not conf.exists():
            conf.write_text("[pam]\nliveness = no\n")
        return out

    monkeypatch.setattr(pam, "_check_owner", racing_check)
    rc = pam.run(_args(setup, setup["astro"], config=str(conf), no_liveness=None))
    assert rc == pam.EXIT_ERROR, env  # before: the planted 'liveness = no' was read (exit 0 on a still image)
