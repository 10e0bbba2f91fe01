"""``faceunlock pam-auth``: Linux login by face through ``pam_exec.so``.

A PAM line such as::

    auth  sufficient  pam_exec.so quiet /usr/local/bin/faceunlock pam-auth

runs this command with the user name in ``PAM_USER``. It answers by exit code only —
0 the face matched (PAM success), anything else a failure, so PAM goes on to the next
module (the password, when the line says ``sufficient``). It never reads stdin and never
prompts. Lockouts are the store's: after 5 failed matches the user must wait, after 20
only ``faceunlock reset-lockout USER`` (run by root after a password login) lifts it.

Settings come from ``/etc/faceunlock/pam.conf`` (``--config``), overridden by flags on
the PAM line::

    [pam]
    store = /var/lib/faceunlock/store/default.fus
    # key_file = /var/lib/faceunlock/keys/...      (default: beside the store)
    source = /dev/video0
    seconds = 5
    liveness = yes
    level = strong
    allow_remote = no

Refused without looking at a face: a remote session (``PAM_RHOST`` set to another
host, e.g. ssh — the camera sees whoever sits at this machine, not the remote user), a
PAM type other than ``auth``, and, when run as root, a store or key file that is not
owned by root or is writable (key: readable) by others. Every decision is logged to
syslog (authpriv) without any template data. See docs/PAM.md.
"""

from __future__ import annotations

import argparse
import configparser
import os
import stat
import sys
import time
from pathlib import Path

__all__ = ["register", "run", "DEFAULT_CONFIG", "EXIT_GRANTED", "EXIT_DENIED", "EXIT_ERROR"]

DEFAULT_CONFIG = Path("/etc/faceunlock/pam.conf")
EXIT_GRANTED, EXIT_DENIED, EXIT_ERROR = 0, 1, 2
_LOCAL_HOSTS = {"", "localhost", "127.0.0.1", "::1", "localhost.localdomain"}


def register(sub, common) -> None:
    p = sub.add_parser("pam-auth", parents=[common],
                       help="PAM helper for pam_exec.so: authenticate $PAM_USER by face (exit 0 = success)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help=f"settings file ({DEFAULT_CONFIG})")
    p.add_argument("--source", help="frame source (config 'source', default /dev/video0)")
    p.add_argument("--seconds", type=float, help="time budget for the attempt (config 'seconds', default 5)")
    p.add_argument("--skip", type=float, default=0.0, help=argparse.SUPPRESS)  # tests: video files
    p.add_argument("--level", choices=["strong", "convenience"], help="match level (config 'level', default strong)")
    p.add_argument("--no-liveness", action="store_true", default=None,
                   help="skip the liveness check (tests only; a photo can then log in)")
    p.add_argument("--allow-remote", action="store_true", default=None,
                   help="also answer when PAM_RHOST names another host (not recommended)")
    p.set_defaults(func=run)


def _log(priority: int, message: str) -> None:
    try:
        import syslog

        syslog.openlog("faceunlock", syslog.LOG_PID, syslog.LOG_AUTHPRIV)
        syslog.syslog(priority, message)
    except Exception:
        pass
    print(f"faceunlock pam-auth: {message}", file=sys.stderr)


def _settings(args) -> dict:
    conf = {"source": "/dev/video0", "seconds": "5", "liveness": "yes", "level": "strong", "allow_remote": "no",
            "store": None, "key_file": None}
    path = Path(args.config)
    if path.exists():
        cp = configparser.ConfigParser()
        try:
            with path.open() as fh:
                cp.read_file(fh)
        except (OSError, configparser.Error) as exc:
            raise _Fail(f"cannot read {path}: {exc}") from None
        if cp.has_section("pam"):
            for k, v in cp.items("pam"):
                conf[k.replace("-", "_")] = v.strip()
    flags = {"source": args.source, "seconds": args.seconds, "level": args.level,
             "store": getattr(args, "store", None), "key_file": getattr(args, "key_file", None)}
    for k, v in flags.items():
        if v is not None:
            conf[k] = v
    if args.no_liveness:
        conf["liveness"] = "no"
    if args.allow_remote:
        conf["allow_remote"] = "yes"
    return conf


class _Fail(Exception):
    """Refuse with an error (exit 2) and log why."""


def _yes(v) -> bool:
    return str(v).strip().lower() in ("1", "yes", "true", "on")


def _check_owner(path: Path, what: str, *, secret: bool) -> None:
    """As root, a store or key file that someone else could have written (or read) is refused."""
    if os.geteuid() != 0:
        return
    for p, kind in ((path, what), (path.parent, f"directory of the {what}")):
        try:
            st = os.stat(p)
        except OSError as exc:
            raise _Fail(f"cannot stat the {kind} {p}: {exc.strerror}") from None
        bad = stat.S_IWGRP | stat.S_IWOTH | ((stat.S_IRGRP | stat.S_IROTH) if secret and p == path else 0)
        if st.st_uid != 0 or st.st_mode & bad:
            raise _Fail(f"refusing the {kind} {p}: it must be owned by root and not writable"
                        f"{' or readable' if secret and p == path else ''} by others (chmod 600 / 700)")


def run(args) -> int:
    """Exit 0 when $PAM_USER's face matched; 1 denied; 2 error. Never prompts."""
    try:
        sys.stdin.close()
    except Exception:
        pass
    user = os.environ.get("PAM_USER", "")
    pam_type = os.environ.get("PAM_TYPE", "auth")
    service = os.environ.get("PAM_SERVICE", "?")
    rhost = os.environ.get("PAM_RHOST", "")
    try:
        if not user:
            raise _Fail("PAM_USER is not set: run from pam_exec.so (or set it by hand to test)")
        if pam_type != "auth":
            _log(_prio("LOG_NOTICE"), f"service={service} user={user} type={pam_type}: only 'auth' is answered; denied")
            return EXIT_DENIED
        conf = _settings(args)
        if rhost.strip().lower() not in _LOCAL_HOSTS and not _yes(conf["allow_remote"]):
            _log(_prio("LOG_NOTICE"), f"service={service} user={user} rhost={rhost}: remote login, the camera "
                 "cannot see a remote user; denied")
            return EXIT_DENIED
        return _authenticate(args, user, service, conf)
    except _Fail as exc:
        _log(_prio("LOG_ERR"), f"service={service} user={user or '?'}: error: {exc}")
        return EXIT_ERROR
    except Exception as exc:  # a PAM helper must answer, never crash with a traceback
        from .errors import FaceUnlockError

        kind = "error" if isinstance(exc, FaceUnlockError) else f"unexpected {type(exc).__name__}"
        _log(_prio("LOG_ERR"), f"service={service} user={user or '?'}: {kind}: {exc}")
        return EXIT_ERROR


def _prio(name: str) -> int:
    try:
        import syslog

        return getattr(syslog, name)
    except ImportError:
        return 0


def _authenticate(args, user: str, service: str, conf: dict) -> int:
    from . import camera
    from .engine import FaceEngine
    from .policy import Policy
    from .store import TemplateStore, default_key_path, default_store_path
    from .unlock import FaceUnlock

    store_path = Path(conf["store"]).expanduser() if conf.get("store") else default_store_path()
    if not store_path.exists():
        raise _Fail(f"no template store at {store_path}: enrol with 'sudo faceunlock enroll {user}'")
    key_file = Path(conf["key_file"]).expanduser() if conf.get("key_file") else default_key_path(store_path)
    _check_owner(store_path, "store", secret=False)
    _check_owner(key_file, "key file", secret=True)
    try:
        seconds = float(conf["seconds"])
    except ValueError:
        raise _Fail(f"seconds must be a number, got {conf['seconds']!r}") from None
    store = TemplateStore(store_path, key_file=key_file, create=False)
    policy = Policy(level=conf["level"], timeout_s=seconds)
    kw = {} if _yes(conf["liveness"]) else {"liveness": False}
    rec = store.get(user)
    engine = FaceEngine(threads=1, **({"embedder": rec.embedder} if rec is not None else {}))
    fu = FaceUnlock(store, engine=engine, policy=policy, **kw)
    t0 = time.monotonic()
    with camera.open(conf["source"], max_seconds=seconds, skip_s=getattr(args, "skip", 0.0) or 0.0) as cam:
        r = fu.unlock(user, cam.timed() if fu.liveness else cam.images())
    score = "-" if r.score is None else f"{r.score:.4f}"
    verdict = getattr(r, "liveness", None)
    live = "OFF" if not fu.liveness else ("-" if verdict is None else f"{verdict.score:.3f}({verdict.reason})")
    msg = (f"service={service} user={user} {'granted' if r.granted else 'denied'} reason={r.reason.value} "
           f"score={score} frames={r.frames_used} ms={(time.monotonic() - t0) * 1000:.0f} "
           f"liveness={live}")
    _log(_prio("LOG_INFO" if r.granted else "LOG_NOTICE"), msg)
    return EXIT_GRANTED if r.granted else EXIT_DENIED
