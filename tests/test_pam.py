"""`faceunlock pam-auth`: exit codes from PAM_USER, refusals, and a real PAM stack.

The unit tests call the command in-process with a PAM-like environment. The integration
test writes a throwaway PAM service using Debian's pam_exec.so, enrols one person from a
dev video and asks `pamtester` to authenticate them and a second enrolled person; it
skips unless run as root with pamtester, pam_exec.so and the ../shared dev videos (CI
installs `pamtester libpam-modules` first)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from faceunlock import cli
from faceunlock.image import load_image

DATA = Path(cli.__file__).resolve().parent / "data"
VIDEOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "faces-dev" / "video_liveness" / "liveportrait_driving"
PAM_SERVICE = "faceunlock-test"


def _views(src: Path, out: Path, n: int = 6) -> Path:
    img = load_image(src)
    out.mkdir(parents=True)
    h, w = img.shape[:2]
    for i in range(n):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), -10 + 4 * i, 0.92 + 0.03 * (i % 3))
        cv2.imwrite(str(out / f"{i:03d}.png"), cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)[:, :, ::-1])
    return out


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory):
    d = tmp_path_factory.mktemp("pam")
    os.chmod(d, 0o700)
    astro = _views(DATA / "astronaut.jpg", d / "astro")
    hopper = _views(DATA / "grace_hopper.jpg", d / "hopper", 2)
    store = ["--store", str(d / "store" / "s.fus"), "--key-file", str(d / "keys" / "s.key")]
    assert cli.main(store + ["enroll", "astro", "--source", str(astro), "--quiet"]) == 0
    return {"store": store, "astro": astro, "hopper": hopper, "dir": d}


@pytest.fixture()
def pam_env(monkeypatch):
    for k in ("PAM_USER", "PAM_TYPE", "PAM_RHOST", "PAM_SERVICE"):
        monkeypatch.delenv(k, raising=False)

    def setenv(**kw):
        for k, v in kw.items():
            monkeypatch.setenv(k, v)

    return setenv


def pam(enrolled, *extra):
    return cli.main(["pam-auth", "--config", "/nonexistent/pam.conf", *enrolled["store"], *extra])


def test_granted_denied_and_refusals(enrolled, pam_env, capsys):
    src = ["--source", str(enrolled["astro"]), "--no-liveness"]
    pam_env(PAM_USER="astro", PAM_TYPE="auth", PAM_SERVICE="login")
    assert pam(enrolled, *src) == 0
    assert pam(enrolled, "--source", str(enrolled["hopper"]), "--no-liveness") == 1  # another face
    pam_env(PAM_USER="nobody-enrolled")
    assert pam(enrolled, *src) == 1
    pam_env(PAM_USER="astro", PAM_TYPE="account")
    assert pam(enrolled, *src) == 1  # only 'auth' is answered
    pam_env(PAM_TYPE="auth", PAM_RHOST="203.0.113.9")
    assert pam(enrolled, *src) == 1  # a remote (ssh) login: the camera cannot see that user
    assert pam(enrolled, *src, "--allow-remote") == 0
    pam_env(PAM_RHOST="")
    assert pam(enrolled, "--source", str(enrolled["dir"] / "missing.mp4"), "--no-liveness") == 2
    err = capsys.readouterr().err
    assert "remote login" in err and "only 'auth'" in err and "no such camera" in err


def test_missing_user_and_config_file(enrolled, pam_env, tmp_path, capsys):
    assert cli.main(["pam-auth", *enrolled["store"], "--source", str(enrolled["astro"])]) == 2  # no PAM_USER
    conf = tmp_path / "pam.conf"
    conf.write_text(f"[pam]\nstore = {enrolled['store'][1]}\nkey_file = {enrolled['store'][3]}\n"
                    f"source = {enrolled['astro']}\nliveness = no\nseconds = 20\n")
    pam_env(PAM_USER="astro")
    assert cli.main(["pam-auth", "--config", str(conf)]) == 0
    conf.write_text("this is not ini")
    assert cli.main(["pam-auth", "--config", str(conf)]) == 2


def test_lockout_is_honoured(enrolled, pam_env, capsys):
    pam_env(PAM_USER="astro")
    for _ in range(5):
        assert pam(enrolled, "--source", str(enrolled["hopper"]), "--no-liveness") == 1
    assert pam(enrolled, "--source", str(enrolled["astro"]), "--no-liveness") == 1  # locked out: no match tried
    assert "locked_out" in capsys.readouterr().err
    assert cli.main(enrolled["store"] + ["reset-lockout", "astro"]) == 0
    assert pam(enrolled, "--source", str(enrolled["astro"]), "--no-liveness") == 0


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="root only: as root the store must be root's")
def test_refuses_a_store_others_can_write(enrolled, pam_env, capsys):
    pam_env(PAM_USER="astro")
    key = Path(enrolled["store"][3])
    os.chmod(key, 0o644)
    try:
        assert pam(enrolled, "--source", str(enrolled["astro"]), "--no-liveness") == 2
    finally:
        os.chmod(key, 0o600)
    assert "must be owned by root" in capsys.readouterr().err


def _pam_exec_present() -> bool:
    return any(Path(d, "pam_exec.so").exists() for d in
               ("/lib/x86_64-linux-gnu/security", "/usr/lib/x86_64-linux-gnu/security",
                "/lib/aarch64-linux-gnu/security", "/usr/lib/aarch64-linux-gnu/security", "/lib/security",
                "/usr/lib/security", "/lib64/security"))


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="needs root (writes /etc/pam.d)")
@pytest.mark.skipif(shutil.which("pamtester") is None or not _pam_exec_present(),
                    reason="needs pamtester and pam_exec.so (apt-get install pamtester libpam-modules)")
@pytest.mark.skipif(not (VIDEOS / "d18.mp4").exists(), reason="needs ../shared dev videos")
def test_pamtester_with_a_throwaway_service(tmp_path):
    d = tmp_path / "sys"
    d.mkdir(mode=0o700)
    os.chmod(d, 0o700)
    store = ["--store", str(d / "store" / "pam.fus"), "--key-file", str(d / "keys" / "pam.key")]
    d18, d19 = str((VIDEOS / "d18.mp4").resolve()), str((VIDEOS / "d19.mp4").resolve())
    assert cli.main(store + ["enroll", "alice", "--source", d18, "--quiet"]) == 0
    assert cli.main(store + ["enroll", "bob", "--source", d19, "--quiet"]) == 0
    # pam_exec runs the command with a bare environment: absolute interpreter, no PATH.
    # Liveness on, as in production, reading the recording from its start; --seconds is
    # generous because a loaded CI machine decodes slowly.
    line = (f"auth required pam_exec.so quiet {sys.executable} -m faceunlock pam-auth "
            f"--config /nonexistent {' '.join(store)} --source {d18} --seconds 60\n")
    service = Path("/etc/pam.d") / PAM_SERVICE
    marker = "# throwaway service written by faceunlock's tests/test_pam.py\n"
    if service.exists():  # only a leftover of an interrupted run of this test may be replaced
        assert service.read_text().startswith(marker), f"{service} exists: refusing to overwrite it"
    service.write_text(marker + line
                       + "account required pam_permit.so\n")
    try:
        ok = subprocess.run(["pamtester", PAM_SERVICE, "alice", "authenticate"], capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL)
        no = subprocess.run(["pamtester", PAM_SERVICE, "bob", "authenticate"], capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL)
        nobody = subprocess.run(["pamtester", PAM_SERVICE, "mallory", "authenticate"], capture_output=True,
                                text=True, timeout=120, stdin=subprocess.DEVNULL)
    finally:
        service.unlink()
    print(ok.stdout, ok.stderr, no.stdout, no.stderr)
    assert ok.returncode == 0 and "successfully authenticated" in ok.stdout + ok.stderr
    assert no.returncode != 0, "bob must be refused: the camera (d18.mp4) shows alice"
    assert nobody.returncode != 0
