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

import pytest

from conftest import write_views
from faceunlock import cli, pam as pam_mod

pam = pam_mod

DATA = Path(cli.__file__).resolve().parent / "data"
VIDEOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "faces-dev" / "video_liveness" / "liveportrait_driving"
PAM_SERVICE = "faceunlock-test"


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory):
    d = tmp_path_factory.mktemp("pam")
    os.chmod(d, 0o700)
    astro = write_views(DATA / "astronaut.jpg", d / "astro")
    hopper = write_views(DATA / "grace_hopper.jpg", d / "hopper", 2)
    store = ["--store", str(d / "store" / "s.fus"), "--key-file", str(d / "keys" / "s.key")]
    assert cli.main(store + ["enroll", "astro", "--source", str(astro), "--quiet"]) == 0
    return {"store": store, "astro": astro, "hopper": hopper, "dir": d}


@pytest.fixture()
def pam_env(monkeypatch):
    for k in ("PAM_USER", "PAM_TYPE", "PAM_RHOST", "PAM_SERVICE", "PAM_TTY", "XDG_SESSION_ID",
              "SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY"):
        monkeypatch.delenv(k, raising=False)
    # The unit tests replay image folders: the explicit test switch allows such sources.
    monkeypatch.setenv(pam.TEST_SOURCES_ENV, "1")
    # The test runner's own ancestry (a CI job started over ssh) must not decide these
    # tests; the remote probes are tested on their own below.
    monkeypatch.setattr(pam, "_ancestors", lambda: [])
    monkeypatch.setattr(pam, "_SESSIONS", Path("/nonexistent-logind-sessions"))

    def setenv(**kw):
        for k, v in kw.items():
            monkeypatch.setenv(k, v)

    return setenv


def run_pam(enrolled, *extra):
    return cli.main(["pam-auth", "--config", "/nonexistent/pam.conf", *enrolled["store"], *extra])


def test_granted_denied_and_refusals(enrolled, pam_env, capsys):
    src = ["--source", str(enrolled["astro"]), "--no-liveness"]
    pam_env(PAM_USER="astro", PAM_TYPE="auth", PAM_SERVICE="login")
    assert run_pam(enrolled, *src) == 0
    assert run_pam(enrolled, "--source", str(enrolled["hopper"]), "--no-liveness") == 1  # another face
    pam_env(PAM_USER="nobody-enrolled")
    assert run_pam(enrolled, *src) == 1
    pam_env(PAM_USER="astro", PAM_TYPE="account")
    assert run_pam(enrolled, *src) == 1  # only 'auth' is answered
    pam_env(PAM_TYPE="auth", PAM_RHOST="203.0.113.9")
    assert run_pam(enrolled, *src) == 1  # a remote (ssh) login: the camera cannot see that user
    assert run_pam(enrolled, *src, "--allow-remote") == 0
    pam_env(PAM_RHOST="")
    assert run_pam(enrolled, "--source", str(enrolled["dir"] / "missing.mp4"), "--no-liveness") == 2
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
        assert run_pam(enrolled, "--source", str(enrolled["hopper"]), "--no-liveness") == 1
    assert run_pam(enrolled, "--source", str(enrolled["astro"]), "--no-liveness") == 1  # locked out: no match tried
    assert "locked_out" in capsys.readouterr().err
    assert cli.main(enrolled["store"] + ["reset-lockout", "astro"]) == 0
    assert run_pam(enrolled, "--source", str(enrolled["astro"]), "--no-liveness") == 0


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="root only: as root the store must be root's")
def test_refuses_a_store_others_can_write(enrolled, pam_env, capsys):
    pam_env(PAM_USER="astro")
    key = Path(enrolled["store"][3])
    os.chmod(key, 0o644)
    try:
        assert run_pam(enrolled, "--source", str(enrolled["astro"]), "--no-liveness") == 2
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
@pytest.mark.skipif(pam_mod.remote_reason({}) is not None, reason="the tests run in a remote (ssh) session: "
                    "pam-auth rightly refuses to answer there")
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
    # The recording is a test source: the command carries the explicit test switch.
    line = (f"auth required pam_exec.so quiet /usr/bin/env {pam.TEST_SOURCES_ENV}=1 {sys.executable} -m faceunlock pam-auth "
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


# ------------------------------------------------------------- finding 1: fail-closed config
def _docs_pam_conf() -> str:
    """The pam.conf example of docs/PAM.md, verbatim (the ```ini block)."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "PAM.md").read_text()
    blocks = [b.split("\n", 1)[1] for b in text.split("```ini")[1:]]
    assert len(blocks) == 1, "docs/PAM.md must hold exactly one ```ini block (the pam.conf example)"
    return blocks[0].split("```", 1)[0]


def test_docs_example_loads_verbatim_with_liveness_on(tmp_path):
    conf = tmp_path / "pam.conf"
    conf.write_text(_docs_pam_conf())
    got = pam.read_config(conf)
    assert got["liveness"] is True
    assert got["source"] == "/dev/video0" and got["seconds"] == 5.0 and got["level"] == "strong"
    assert got.get("allow_remote", False) is False


@pytest.mark.parametrize("value,expected", [(v, True) for v in ("1", "yes", "YES", "true", "True", "on", "On")]
                         + [(v, False) for v in ("0", "no", "No", "false", "FALSE", "off", "OFF")]
                         + [("yes   # passive 3D check", True), ("yes ; comment", True), ("  no  ", False)])
def test_strict_booleans_accepted(tmp_path, value, expected):
    conf = tmp_path / "pam.conf"
    conf.write_text(f"[pam]\nliveness = {value}\nallow_remote = {value}\n")
    got = pam.read_config(conf)
    assert got["liveness"] is expected and got["allow_remote"] is expected


BAD_LIVENESS = ["enabled", "y", "n", '"yes"', "'yes'", "", "2", "-1", "yes no", "yes#x", "t", "f", "oui",
                "disabled", "none", "null", "yes\n  no"]


@pytest.mark.parametrize("value", BAD_LIVENESS)
def test_every_other_liveness_value_is_an_error(enrolled, pam_env, tmp_path, capsys, value):
    conf = tmp_path / "pam.conf"
    conf.write_text(f"# a comment line\n[pam]\nsource = {enrolled['astro']}\nliveness = {value}\n")
    pam_env(PAM_USER="astro")
    assert cli.main(["pam-auth", "--config", str(conf), *enrolled["store"]]) == 2
    err = capsys.readouterr().err
    assert f"{conf} line 4" in err and "liveness" in err
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1, err


@pytest.mark.parametrize("body,needle", [
    ("[pam]\nlevel = Strong-ish\n", "line 2: level"),
    ("[pam]\nseconds = five\n", "line 2: seconds"),
    ("[pam]\nseconds = nan\n", "line 2: seconds"),
    ("[pam]\nseconds = 0\n", "line 2: seconds"),
    ("[pam]\nallow_remote = sometimes\n", "line 2: allow_remote"),
    ("[pam]\nlivenes = no\n", "line 2: livenes: unknown setting"),
    ("[pam]\nliveness = yes\nliveness = no\n", "line 3"),
    ("[PAM]\nliveness = no\n", "exactly one section [pam]"),
    ("[DEFAULT]\nliveness = no\n[pam]\n", "exactly one section [pam]"),
    ("liveness = no\n", "line 1"),
    ("[pam]\nsource =\n", "line 2: source: empty value"),
])
def test_config_errors_name_the_line(tmp_path, body, needle):
    conf = tmp_path / "pam.conf"
    conf.write_text(body)
    with pytest.raises(pam._Fail) as exc:
        pam.read_config(conf)
    assert needle in str(exc.value) and str(conf) in str(exc.value)


def test_liveness_yes_with_a_comment_keeps_the_check_on(enrolled, pam_env, tmp_path):
    """The old parser read 'yes   # …' as 'off': a still photo of the user logged in."""
    conf = tmp_path / "pam.conf"
    pam_env(PAM_USER="astro")
    conf.write_text(f"[pam]\nsource = {enrolled['astro']}\nliveness = no   # tests only\n")
    assert cli.main(["pam-auth", "--config", str(conf), *enrolled["store"]]) == 0  # the photos match
    conf.write_text(f"[pam]\nsource = {enrolled['astro']}\nliveness = yes   # passive 3D check\n")
    assert cli.main(["pam-auth", "--config", str(conf), *enrolled["store"]]) == 1  # stills: liveness fails
    assert cli.main(enrolled["store"] + ["reset-lockout", "astro"]) == 0


# ------------------------------------------------------- finding 5: config owner, sources, remote
@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="root only: as root the config must be root's")
@pytest.mark.parametrize("case", ["other-owner", "0666", "dir-0777", "symlink-into-0777"])
def test_root_refuses_a_config_others_control(enrolled, pam_env, tmp_path, capsys, case):
    d = tmp_path / "etc"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    conf = d / "pam.conf"
    conf.write_text(f"[pam]\nsource = {enrolled['astro']}\nliveness = no\n")
    os.chmod(conf, 0o644)
    pam_env(PAM_USER="astro")
    assert cli.main(["pam-auth", "--config", str(conf), *enrolled["store"]]) == 0  # root's 0644: accepted
    if case == "other-owner":
        os.chown(conf, 65534, 65534)
    elif case == "0666":
        os.chmod(conf, 0o666)
    elif case == "dir-0777":
        os.chmod(d, 0o777)
    else:  # a root-owned link in a root-owned directory, to a file in a world-writable one
        loose = tmp_path / "loose"
        loose.mkdir()
        os.chmod(loose, 0o777)
        os.rename(conf, loose / "pam.conf")
        os.symlink(loose / "pam.conf", conf)
    assert cli.main(["pam-auth", "--config", str(conf), *enrolled["store"]]) == 2
    assert "refusing the" in capsys.readouterr().err


def test_only_cameras_without_the_test_switch(enrolled, pam_env, monkeypatch, capsys):
    pam_env(PAM_USER="astro")
    monkeypatch.delenv(pam.TEST_SOURCES_ENV)
    video = enrolled["dir"] / "clip.mp4"
    video.write_bytes(b"not really a video")
    for src in (str(video), str(enrolled["astro"]), "/dev/null", "/etc/passwd", "picamera-x", "../0"):
        assert run_pam(enrolled, "--source", src, "--no-liveness") == 2, src
    assert "is not a camera" in capsys.readouterr().err
    monkeypatch.setenv(pam.TEST_SOURCES_ENV, "yes")  # only exactly "1" switches it on
    assert run_pam(enrolled, "--source", str(enrolled["astro"]), "--no-liveness") == 2
    for ok in ("0", "picamera", "picamera:1", "/dev/video0"):
        pam._check_source(ok)  # accepted (opening a missing camera is a later exit 2)


@pytest.mark.parametrize("rhost", ["127.0.0.1", "localhost", "::1", "192.0.2.7", "x", " "])
def test_any_pam_rhost_is_remote(enrolled, pam_env, rhost):
    pam_env(PAM_USER="astro", PAM_RHOST=rhost)
    assert run_pam(enrolled, "--source", str(enrolled["astro"]), "--no-liveness") == 1


def test_ssh_variables_and_logind_sessions_are_remote(enrolled, pam_env, monkeypatch, tmp_path, capsys):
    pam_env(PAM_USER="astro")
    src = ("--source", str(enrolled["astro"]), "--no-liveness")
    for var in ("SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY"):
        monkeypatch.setenv(var, "203.0.113.9 5555 10.0.0.2 22")
        assert run_pam(enrolled, *src) == 1, var
        monkeypatch.delenv(var)
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    monkeypatch.setattr(pam, "_SESSIONS", sessions)
    (sessions / "c7").write_text("UID=1000\nUSER=alice\nACTIVE=1\nSERVICE=sudo\nREMOTE=1\nTTY=pts/4\n")
    (sessions / "8").write_text("UID=1000\nSERVICE=sshd\nREMOTE=0\nTTY=pts/5\n")
    (sessions / "2").write_text("UID=1000\nSERVICE=gdm-password\nREMOTE=0\nTTY=tty2\n")
    monkeypatch.setenv("XDG_SESSION_ID", "c7")
    assert run_pam(enrolled, *src) == 1
    monkeypatch.setenv("XDG_SESSION_ID", "8")
    assert run_pam(enrolled, *src) == 1
    monkeypatch.setenv("XDG_SESSION_ID", "2")
    assert run_pam(enrolled, *src) == 0  # a local graphical session
    for tty, code in (("/dev/pts/4", 1), ("pts/5", 1), ("ssh", 1), ("/dev/tty2", 0)):
        monkeypatch.setenv("PAM_TTY", tty)
        assert run_pam(enrolled, *src) == code, tty
    assert "remote login" in capsys.readouterr().err


def test_ssh_variables_of_an_ancestor_are_seen():
    """sudo and pam_exec hand the helper a clean environment; the ssh shell above it still
    shows in /proc/PID/environ of an ancestor."""
    probe = "import sys; from faceunlock import pam; r = pam.remote_reason({}); print(r); sys.exit(0 if r else 3)"
    inner = f"import subprocess, sys; sys.exit(subprocess.run([sys.executable, '-c', {probe!r}], env={{}}).returncode)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSH_")}
    if pam_mod.remote_reason(env) is None:  # a local run: without the variable it is local
        assert subprocess.run([sys.executable, "-c", inner], env=env, capture_output=True).returncode == 3
    r = subprocess.run([sys.executable, "-c", inner], env={**env, "SSH_CONNECTION": "203.0.113.9 5555 10.0.0.2 22"},
                       capture_output=True, text=True)
    assert r.returncode == 0 and "SSH_CONNECTION" in r.stdout, r.stdout + r.stderr


# ---------------------------------------------------------- finding 4: closed stderr/stdout
def test_closed_stderr_never_turns_an_error_into_success(tmp_path):
    env = {**os.environ, "PAM_USER": "alice", pam.TEST_SOURCES_ENV: "1"}
    env.pop("PAM_RHOST", None)
    cmd = (f"{sys.executable} -m faceunlock pam-auth --config /nonexistent --store {tmp_path}/missing.fus "
           f"--source 0 2>&-")
    r = subprocess.run(["bash", "-c", cmd], env=env, capture_output=False, stdout=subprocess.DEVNULL)
    assert r.returncode == 2
    r = subprocess.run(["bash", "-c", cmd.replace("2>&-", "2>&- 1>&-")], env=env)
    assert r.returncode == 2


def test_watchdog_kills_a_hung_pam_auth():
    """A camera read that never returns must not hang the login: the watchdog's SIGALRM
    (default action) ends the process, so PAM sees a failure and falls through."""
    import signal
    import time

    code = "from faceunlock.pam import _watchdog; _watchdog(1); import time; time.sleep(30); print('survived')"
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == -signal.SIGALRM and "survived" not in p.stdout
    assert time.monotonic() - t0 < 25


def test_pam_auth_arms_the_watchdog_and_disarms_it(enrolled, pam_env, monkeypatch):
    import signal

    armed, disarmed = [], []

    def fake_watchdog(seconds):
        armed.append(seconds)
        return lambda: disarmed.append(True)

    monkeypatch.setattr(pam, "_watchdog", fake_watchdog)
    pam_env(PAM_USER="astro", PAM_TYPE="auth", PAM_SERVICE="login")
    assert run_pam(enrolled, "--source", str(enrolled["astro"]), "--no-liveness", "--seconds", "7.2") == 0
    assert armed == [8 + pam.WATCHDOG_MARGIN_S] and disarmed == [True]
    monkeypatch.undo()
    # the real one, in-process: armed and disarmed again (the test run is not killed later)
    disarm = pam._watchdog(5)
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL
    disarm()
    assert signal.alarm(0) == 0
