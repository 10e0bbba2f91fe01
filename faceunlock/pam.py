"""``faceunlock pam-auth``: Linux login by face through ``pam_exec.so``.

A PAM line such as::

    auth  sufficient  pam_exec.so quiet /opt/faceunlock/bin/python -I -m faceunlock pam-auth

runs this command with the user name in ``PAM_USER``. It answers by exit code only —
0 the face matched (PAM success), anything else a failure, so PAM goes on to the next
module (the password, when the line says ``sufficient``). It never reads stdin and never
prompts. Lockouts are the store's: after 5 failed matches the user must wait, after 20
only ``faceunlock reset-lockout USER`` (run by root after a password login) lifts it.

Settings come from ``/etc/faceunlock/pam.conf`` (``--config``), overridden by flags on
the PAM line. The file is parsed fail-closed: only the keys below, booleans only as
``yes/no/true/false/on/off/1/0`` (any case), ``level`` only ``strong``/``convenience``,
``#``/``;`` start a comment anywhere on a line; anything else is an error (exit 2, the
file and line named on stderr and in syslog), never a default::

    [pam]
    store = /var/lib/faceunlock/store/default.fus
    # key_file = /var/lib/faceunlock/keys/...      (default: beside the store)
    source = /dev/video0
    seconds = 5
    liveness = yes
    level = strong
    allow_remote = no

Refused without looking at a face: a remote session (``PAM_RHOST`` non-empty, ssh
variables in this process or its ancestors, a logind session marked remote or run by
sshd — the camera sees whoever sits at this machine, not the remote user), a PAM type
other than ``auth``, a ``source`` that is not a camera (``/dev/videoN`` character device,
a camera index or ``picamera``; files only with the test switch
``FACEUNLOCK_PAM_TEST_SOURCES=1``), and, when run as root, a config file, store or key
file (or any directory above what they resolve to) that is not owned by root or is
writable (key: readable) by others; as root, HOME and XDG_DATA_HOME are not taken from the
environment (root's own home; the system store). Every decision is logged to syslog (authpriv) without any template data. See
docs/PAM.md.
"""

from __future__ import annotations

import argparse
import configparser
import math
import os
import re
import stat
import sys
import time
from pathlib import Path

from .cli import _err as _write_stderr  # one line on stderr; never raises

__all__ = ["register", "run", "remote_reason", "DEFAULT_CONFIG", "TEST_SOURCES_ENV",
           "EXIT_GRANTED", "EXIT_DENIED", "EXIT_ERROR"]

DEFAULT_CONFIG = Path("/etc/faceunlock/pam.conf")
EXIT_GRANTED, EXIT_DENIED, EXIT_ERROR = 0, 1, 2
#: Test switch: when this environment variable is exactly "1", ``source`` may also be a
#: video file, an image or a folder (the PAM tests replay recordings). Never set it on a
#: real system: a recording of the user would then log them in.
TEST_SOURCES_ENV = "FACEUNLOCK_PAM_TEST_SOURCES"

_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off"}
_KEYS = ("store", "key_file", "source", "seconds", "liveness", "level", "allow_remote")
_LEVELS = ("strong", "convenience")
_SSH_VARS = ("SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY")
# Where the remote-session probes look (replaced by the unit tests).
_PROC = Path("/proc")
_SESSIONS = Path("/run/systemd/sessions")


def register(sub, common) -> None:
    p = sub.add_parser("pam-auth", parents=[common],
                       help="PAM helper for pam_exec.so: authenticate $PAM_USER by face (exit 0 = success)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help=f"settings file ({DEFAULT_CONFIG})")
    p.add_argument("--source", help="camera: /dev/videoN, an index or picamera (config 'source', default /dev/video0)")
    p.add_argument("--seconds", type=float, help="time budget for the attempt (config 'seconds', default 5)")
    p.add_argument("--skip", type=float, default=0.0, help=argparse.SUPPRESS)  # tests: video files
    p.add_argument("--level", choices=list(_LEVELS), help="match level (config 'level', default strong)")
    p.add_argument("--no-liveness", action="store_true", default=None,
                   help="skip the liveness check (tests only; a photo can then log in)")
    p.add_argument("--allow-remote", action="store_true", default=None,
                   help="also answer in a remote session (not recommended)")
    p.add_argument("--challenge", action="store_true",
                   help="step-up: also answer 2-3 random prompts (turn, look up, blink), printed on stdout "
                        "(pam_exec's 'stdout' option shows them); the budget grows to cover them")
    p.set_defaults(func=run)




def _log(priority: int, message: str) -> None:
    """Syslog (authpriv) and stderr. Never raises: a PAM helper must still answer.
    Non-printable characters (a newline in a PAM_USER typed at a login prompt) are escaped:
    one decision is one log line, never a forged second one."""
    message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
    try:
        import syslog

        syslog.openlog("faceunlock", syslog.LOG_PID, syslog.LOG_AUTHPRIV)
        syslog.syslog(priority, message)
    except Exception:
        pass
    _write_stderr(f"faceunlock pam-auth: {message}")


class _Fail(Exception):
    """Refuse with an error (exit 2) and log why."""


def parse_bool(value: str, where: str) -> bool:
    """``yes/no/true/false/on/off/1/0`` (any case, surrounding blanks ignored); anything
    else raises _Fail naming ``where``."""
    v = str(value).strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise _Fail(f"{where}: {value!r} is not a boolean (use yes/no, true/false, on/off or 1/0)")


def _key_lines(text: str) -> dict[str, int]:
    """1-based line number of each key's first line in the [pam] section (for messages)."""
    out: dict[str, int] = {}
    section = None
    for n, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if s.startswith("[") and "]" in s:
            section = s[1:s.index("]")].strip()
            continue
        m = re.match(r"^([^=:\s#;][^=:]*?)\s*[=:]", line)
        if m and not line[:1].isspace() and section is not None:
            out.setdefault(f"{section}/{m.group(1).strip().lower()}", n)
    return out


def read_config(path: Path) -> dict:
    """The settings of ``path`` (a pam.conf), validated; {} when the file does not exist.
    Raises _Fail (exit 2) for anything it does not understand."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise _Fail(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    cp = configparser.ConfigParser(inline_comment_prefixes=("#", ";"), comment_prefixes=("#", ";"),
                                   strict=True, interpolation=None, default_section="\0no default section")
    try:
        cp.read_string(text, source=str(path))
    except configparser.Error as exc:
        line = getattr(exc, "lineno", None)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _Fail(f"{path}{f' line {line}' if line else ''}: cannot parse: {first}") from None
    lines = _key_lines(text)
    if cp.sections() != ["pam"]:
        raise _Fail(f"{path}: expected exactly one section [pam], found "
                    f"{', '.join('[' + s + ']' for s in cp.sections()) or 'none'}")
    conf: dict = {}
    for raw_key, value in cp.items("pam"):
        key = raw_key.replace("-", "_")
        where = f"{path} line {lines.get('pam/' + raw_key, '?')}: {raw_key}"
        if key not in _KEYS:
            raise _Fail(f"{where}: unknown setting (known: {', '.join(_KEYS)})")
        value = value.strip()
        if "\n" in value:
            raise _Fail(f"{where}: a value must fit on one line")
        if key in ("liveness", "allow_remote"):
            conf[key] = parse_bool(value, where)
        elif key == "level":
            if value.lower() not in _LEVELS:
                raise _Fail(f"{where}: {value!r} is not a level (use strong or convenience)")
            conf[key] = value.lower()
        elif key == "seconds":
            conf[key] = _seconds(value, where)
        else:
            if not value:
                raise _Fail(f"{where}: empty value")
            conf[key] = value
    return conf


def _seconds(value, where: str) -> float:
    try:
        s = float(value)
    except (TypeError, ValueError):
        raise _Fail(f"{where}: {value!r} is not a number of seconds") from None
    if not (math.isfinite(s) and 0 < s <= 600):
        raise _Fail(f"{where}: {value!r} must be more than 0 and at most 600 seconds")
    return s


def _settings(args) -> dict:
    conf = {"source": "/dev/video0", "seconds": 5.0, "liveness": True, "level": "strong", "allow_remote": False,
            "store": None, "key_file": None}
    path = _check_owner(Path(args.config), "config file", secret=False, missing_ok=True)
    conf.update(read_config(path))  # the resolved file that was checked
    flags = {"source": args.source, "level": args.level,
             "store": getattr(args, "store", None), "key_file": getattr(args, "key_file", None)}
    for k, v in flags.items():
        if v is not None:
            conf[k] = v
    if args.seconds is not None:
        conf["seconds"] = _seconds(args.seconds, "--seconds")
    if args.no_liveness:
        conf["liveness"] = False
    if args.allow_remote:
        conf["allow_remote"] = True
    return conf


def _check_owner(path: Path, what: str, *, secret: bool, missing_ok: bool = False) -> Path:
    """As root, a config, store, key, spec or model file that someone else could have
    written (or read) is refused. The path is resolved once (symlinks followed) and the
    RESOLVED file must be owned by root and not writable by group/others (a secret: nor
    readable), and so must every directory from it up to ``/`` — a directory that others
    may write is accepted only with the sticky bit (``/tmp``) and a root-owned entry below
    it, since otherwise they could rename a folder on the way and put their own in its
    place. Returns the resolved path: read THAT, never the name again (a symlink on the way
    could be re-pointed between the check and the read). Not root: ``path`` unchanged."""
    if os.geteuid() != 0:
        return path
    real = Path(os.path.realpath(path))
    try:
        st = os.stat(real)
    except FileNotFoundError:
        if missing_ok:  # the defaults — unless someone else could create it before it is read
            _check_missing(real, what, path)
            return real  # read where it was found missing, never the name (a link on the way may move)
        raise _Fail(f"cannot stat the {what} {path}: not found") from None
    except OSError as exc:
        raise _Fail(f"cannot stat the {what} {path}: {exc.strerror}") from None
    shown = f"{path}" if real == Path(path) else f"{path} (= {real})"
    bad = stat.S_IWGRP | stat.S_IWOTH | ((stat.S_IRGRP | stat.S_IROTH) if secret else 0)
    if st.st_uid != 0 or st.st_mode & bad:
        raise _Fail(f"refusing the {what} {shown}: it must be owned by root and not writable"
                    f"{' or readable' if secret else ''} by group or others "
                    f"(owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})")
    child_uid = st.st_uid
    for d in real.parents:
        kind = f"directory {d} of the {what} {shown}"
        try:
            dst = os.stat(d)
        except OSError as exc:
            raise _Fail(f"cannot stat the {kind}: {exc.strerror}") from None
        open_to_others = dst.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        sticky_ok = open_to_others and dst.st_mode & stat.S_ISVTX and child_uid == 0
        if dst.st_uid != 0 or (open_to_others and not sticky_ok):
            raise _Fail(f"refusing the {kind}: every directory on the way must be owned by root and not "
                        f"writable by group or others (owner uid {dst.st_uid}, mode {stat.S_IMODE(dst.st_mode):04o})")
        child_uid = dst.st_uid
    return real


def _check_missing(real: Path, what: str, path: Path) -> None:
    """A missing file counts as absent only when nobody but root could create it: the
    nearest existing folder above it and every folder up to ``/`` must be root's and not
    writable by group or others (sticky or not: the entry does not exist yet)."""
    d = real.parent
    while True:
        try:
            st = os.stat(d)
            break
        except FileNotFoundError:
            if d.parent == d:
                return
            d = d.parent
        except OSError as exc:
            raise _Fail(f"cannot stat {d}, above the missing {what} {path}: {exc.strerror}") from None
    if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise _Fail(f"refusing the missing {what} {path}: its folder {d} is not root's or others may write "
                    f"there (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}), so the file could appear")
    if d.parent != d:
        _check_owner(d, f"folder above the missing {what} {path}", secret=False)


def _check_source(source) -> None:
    """Only a camera may log a user in: /dev/videoN (a character device), a camera index
    or picamera[:N]. Files, folders and anything else need the test switch."""
    s = str(source).strip()
    if os.environ.get(TEST_SOURCES_ENV) == "1":
        return
    if re.fullmatch(r"\d{1,3}", s) or re.fullmatch(r"picamera(:\d{1,2})?", s):
        return
    if re.fullmatch(r"/dev/video\d+", s):
        try:
            if stat.S_ISCHR(os.stat(s).st_mode):
                return
        except OSError:
            return  # a missing camera: camera.open reports it (exit 2)
        raise _Fail(f"source {s} is not a character device")
    raise _Fail(f"source {s!r} is not a camera (use /dev/videoN, a camera index or picamera; "
                f"recordings only in tests with {TEST_SOURCES_ENV}=1)")


# ----------------------------------------------------------------------- remote sessions
def _environ_of(pid: str) -> dict[str, str]:
    try:
        raw = (_PROC / pid / "environ").read_bytes()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            out[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
    return out


def _ancestors(limit: int = 64) -> list[str]:
    """This process and its ancestors, as pid strings (from /proc)."""
    out, pid = [], "self"
    for _ in range(limit):
        try:
            fields = (_PROC / pid / "stat").read_text().rsplit(")", 1)[1].split()
            real = pid if pid != "self" else str(os.getpid())
        except (OSError, IndexError):
            break
        out.append(real)
        ppid = fields[1]
        if ppid in ("0", "1") or ppid == real:
            break
        pid = ppid
    return out


def _session_file(sid: str) -> dict[str, str]:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", sid):
        return {}
    try:
        text = (_SESSIONS / sid).read_text()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _session_remote(info: dict[str, str]) -> str | None:
    if info.get("REMOTE") == "1":
        return "REMOTE=1"
    if "ssh" in info.get("SERVICE", "").lower():
        return f"SERVICE={info['SERVICE']}"
    if info.get("REMOTE_HOST"):
        return f"REMOTE_HOST={info['REMOTE_HOST']}"
    return None


def remote_reason(env: dict[str, str] | None = None) -> str | None:
    """Why this PAM call looks remote, or None when nothing says so.

    Looks at: ``PAM_RHOST`` (any non-empty value, 127.0.0.1 included: an ssh tunnel ends
    there), ``PAM_TTY`` naming ssh, the ssh variables (SSH_CONNECTION, SSH_CLIENT,
    SSH_TTY) in this process's environment and in its ancestors' (``/proc/PID/environ``:
    pam_exec passes only PAM variables, but sudo and su keep their caller's environment in
    /proc), an ancestor named sshd, and every logind session that this process belongs to
    (``XDG_SESSION_ID``, the audit session id, the cgroup's ``session-N.scope``) or that
    owns ``PAM_TTY`` (``/run/systemd/sessions/N``: ``REMOTE=1``, a ``SERVICE`` of sshd, a
    ``REMOTE_HOST``). See docs/PAM.md for what it cannot see.
    """
    env = dict(os.environ if env is None else env)
    rhost = env.get("PAM_RHOST", "")
    if rhost:  # any value at all, blanks included
        return f"PAM_RHOST={rhost!r}"
    tty = env.get("PAM_TTY", "").strip()
    if tty.lower() == "ssh":
        return "PAM_TTY=ssh"
    for k in _SSH_VARS:
        if env.get(k):
            return f"{k} in the environment"
    sessions: list[str] = []
    for pid in _ancestors():
        penv = env if pid == str(os.getpid()) else _environ_of(pid)
        for k in _SSH_VARS:
            if penv.get(k):
                return f"{k} in the environment of pid {pid}"
        if penv.get("XDG_SESSION_ID"):
            sessions.append(penv["XDG_SESSION_ID"])
        try:
            comm = (_PROC / pid / "comm").read_text().strip()
        except OSError:
            comm = ""
        if comm == "sshd" or comm.startswith("sshd-"):
            return f"ancestor pid {pid} is sshd"
    if env.get("XDG_SESSION_ID"):
        sessions.insert(0, env["XDG_SESSION_ID"])
    try:
        audit = (_PROC / "self" / "sessionid").read_text().strip()
        if audit and audit != "4294967295":
            sessions.append(audit)
    except OSError:
        pass
    try:
        for line in (_PROC / "self" / "cgroup").read_text().splitlines():
            m = re.search(r"/session-([A-Za-z0-9_.-]+)\.scope", line)
            if m:
                sessions.append(m.group(1))
    except OSError:
        pass
    for sid in dict.fromkeys(sessions):
        why = _session_remote(_session_file(sid))
        if why:
            return f"logind session {sid}: {why}"
    if tty:
        names = {tty, tty.removeprefix("/dev/")}
        try:
            entries = list(_SESSIONS.iterdir())
        except OSError:
            entries = []
        for f in entries:
            info = _session_file(f.name)
            if info.get("TTY") in names:
                why = _session_remote(info)
                if why:
                    return f"logind session {f.name} owning {tty}: {why}"
    return None


def run(args) -> int:
    """Exit 0 when $PAM_USER's face matched; 1 denied; 2 error. Never prompts."""
    try:
        sys.stdin.close()
    except Exception:
        pass
    user = os.environ.get("PAM_USER", "")
    pam_type = os.environ.get("PAM_TYPE", "auth")
    service = os.environ.get("PAM_SERVICE", "?")
    saved_env = _root_environment()
    try:
        if not user:
            raise _Fail("PAM_USER is not set: run from pam_exec.so (or set it by hand to test)")
        if pam_type != "auth":
            _log(_prio("LOG_NOTICE"), f"service={service} user={user} type={pam_type}: only 'auth' is answered; denied")
            return EXIT_DENIED
        conf = _settings(args)
        if not conf["allow_remote"]:
            why = remote_reason()
            if why:
                _log(_prio("LOG_NOTICE"), f"service={service} user={user}: remote login ({why}), the camera "
                     "cannot see a remote user; denied")
                return EXIT_DENIED
        _check_source(conf["source"])
        disarm = _watchdog(math.ceil(conf["seconds"]) + WATCHDOG_MARGIN_S)
        try:
            return _authenticate(args, user, service, conf)
        finally:
            disarm()
    except _Fail as exc:
        _log(_prio("LOG_ERR"), f"service={service} user={user or '?'}: error: {exc}")
        return EXIT_ERROR
    except Exception as exc:  # a PAM helper must answer, never crash with a traceback
        from .errors import FaceUnlockError

        kind = "error" if isinstance(exc, FaceUnlockError) else f"unexpected {type(exc).__name__}"
        _log(_prio("LOG_ERR"), f"service={service} user={user or '?'}: {kind}: {exc}")
        return EXIT_ERROR
    finally:
        _restore_environment(saved_env)


#: pam-auth ends itself (SIGALRM, default action: the process is killed, so PAM sees a
#: failure and falls through to the password) this long after its attempt's time budget:
#: a camera read that never returns must not hang the login. Covers a challenge's longer
#: budget and a slow cold start on a Raspberry Pi.
WATCHDOG_MARGIN_S = 90


def _watchdog(seconds: int):
    """Arm SIGALRM with its default action (terminate) in ``seconds``; returns the function
    that disarms it and restores the previous handler and a timer the host program had
    running (``alarm``/``setitimer``; due meanwhile: it fires right after). A no-op off the
    main thread, where SIGALRM does not exist, or under a handler Python cannot restore."""
    import signal
    import threading

    if (not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGALRM) is None):  # None: a handler Python cannot put back
        return lambda: None
    previous = signal.signal(signal.SIGALRM, signal.SIG_DFL)
    t0 = time.monotonic()
    host = signal.setitimer(signal.ITIMER_REAL, max(1, int(seconds)))  # the host's own timer, if any

    def disarm() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if host[0] > 0:  # give an in-process host its timer back (late rather than lost)
            signal.setitimer(signal.ITIMER_REAL, max(0.001, host[0] - (time.monotonic() - t0)), host[1])

    return disarm


def _root_home() -> str:
    """Root's home from the password database of the EFFECTIVE uid. (Python's
    ``Path.home()`` without HOME uses the REAL uid: under sudo or su, the caller's.)"""
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_dir or "/root"
    except KeyError:
        return "/root"


_CALLER_PATH_VARS = ("HOME", "XDG_DATA_HOME")


def _root_environment() -> dict[str, str | None]:
    """As root, paths never come from the caller: HOME is root's own and XDG_DATA_HOME is
    dropped, so the default store is the system store and imported models are root's
    (``$FACEUNLOCK_MODEL_DIR`` is still honoured: every folder on its way is checked).
    Returns what was replaced (restored when pam-auth returns, for in-process callers)."""
    if os.geteuid() != 0:
        return {}
    saved = {k: os.environ.get(k) for k in _CALLER_PATH_VARS}
    os.environ.pop("XDG_DATA_HOME", None)
    os.environ["HOME"] = _root_home()
    return saved


def _restore_environment(saved: dict[str, str | None]) -> None:
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _prio(name: str) -> int:
    try:
        import syslog

        return getattr(syslog, name)
    except ImportError:
        return 0


def _authenticate(args, user: str, service: str, conf: dict) -> int:
    from . import camera
    from .embed import SHIPPED_EMBEDDERS, SPEC_FILE, embedder_for_record
    from .engine import FaceEngine
    from .policy import Policy
    from .store import TemplateStore, default_key_path, default_store_path
    from .unlock import FaceUnlock

    store_path = Path(conf["store"]).expanduser() if conf.get("store") else default_store_path()
    if not store_path.exists():
        raise _Fail(f"no template store at {store_path}: enrol with 'sudo faceunlock enroll {user}'")
    key_file = Path(conf["key_file"]).expanduser() if conf.get("key_file") else default_key_path(store_path)
    store_path = _check_owner(store_path, "store", secret=False)  # resolved: opened as checked
    key_file = _check_owner(key_file, "key file", secret=True)
    seconds = conf["seconds"]
    store = TemplateStore(store_path, key_file=key_file, create=False)
    policy = Policy(level=conf["level"], timeout_s=seconds)
    kw = {} if conf["liveness"] is True else {"liveness": False}
    rec = store.get(user)
    spec = None
    if rec is not None:
        if rec.embedder in SHIPPED_EMBEDDERS or os.geteuid() != 0:
            spec = embedder_for_record(rec.embedder)  # a name, never a path
        else:
            # An imported model: root's own files only. Nothing is read before it is
            # checked; the spec is read from the resolved path that was checked, and its
            # model file is pinned the same way.
            from dataclasses import replace

            from .embed import _RECORD_NAME, load_spec, user_model_dir
            from .errors import ModelError

            if not isinstance(rec.embedder, str) or not _RECORD_NAME.match(rec.embedder):
                raise ModelError(f"stored embedder name {rec.embedder!r} is not a model name")
            checked = _check_owner(user_model_dir() / rec.embedder / SPEC_FILE, "embedder spec", secret=False)
            spec = load_spec(checked)
            spec = replace(spec, file=str(_check_owner(spec.path, "embedder model", secret=False)))
    engine = FaceEngine(threads=1, **({"embedder": spec} if spec is not None else {}))
    fu = FaceUnlock(store, engine=engine, policy=policy, **kw)
    fu._usable_threshold()  # an uncalibrated imported model: exit 2 before the camera opens
    challenge = None
    if getattr(args, "challenge", False):
        if not fu.liveness:
            raise _Fail("--challenge needs the liveness check (config 'liveness = yes')")
        challenge = fu.liveness.new_challenge()
        seconds = max(float(seconds), len(challenge.prompts) * challenge.step_timeout_s + 1.0)
    t0 = time.monotonic()
    with camera.open(conf["source"], max_seconds=seconds, skip_s=getattr(args, "skip", 0.0) or 0.0) as cam:
        frames = cam.timed() if fu.liveness else cam.images()
        if challenge is not None:
            from .liveness.challenge import prompted

            frames = prompted(frames, challenge, lambda text: print(f"face unlock: {text}", flush=True))
        r = fu.unlock(user, frames, challenge=challenge)
    score = "-" if r.score is None else f"{r.score:.4f}"
    verdict = getattr(r, "liveness", None)
    live = "OFF" if not fu.liveness else ("-" if verdict is None else f"{verdict.score:.3f}({verdict.reason})")
    msg = (f"service={service} user={user} {'granted' if r.granted else 'denied'} reason={r.reason.value} "
           f"score={score} frames={r.frames_used} ms={(time.monotonic() - t0) * 1000:.0f} "
           f"liveness={live}")
    _log(_prio("LOG_INFO" if r.granted else "LOG_NOTICE"), msg)
    return EXIT_GRANTED if r.granted else EXIT_DENIED
