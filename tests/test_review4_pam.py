"""Review 4 (pam-auth, as root / in-process): what is read must be what was checked, and
the watchdog must not take over a host program's own alarm.

1. A missing config file is accepted (the defaults) when nobody but root could create it:
   the check looks at the folder the name RESOLVES to, but the file was then read by the
   NAME. A name through a symlink in a folder others can write (``--config
   /srv/open/cfg/pam.conf`` with ``cfg -> /etc/faceunlock``) is re-pointed between the
   check and the read (simulated right after the check, as a winning race would) to a
   folder holding ``liveness = no``: a photo would then log in.
2. ``_watchdog`` armed SIGALRM for pam-auth and disarmed it with ``alarm(0)``: a timer the
   host program had running (``setitimer``/``alarm``, e.g. its own timeout) was silently
   cancelled for good. It must be running again after ``run()`` returns.

(The store under a writable folder, also found by review 4, is tested with the key case in
tests/test_review3_pam_paths.py.)
"""

from __future__ import annotations

import argparse
import os
import signal
import threading

import pytest

from faceunlock import pam

posix_root = pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0,
                                reason="pam-auth's ownership checks apply as root only")


@posix_root
def test_missing_config_is_read_from_the_checked_folder_not_by_name(tmp_path, monkeypatch):
    os.chmod(tmp_path, 0o755)
    safe = tmp_path / "etc-faceunlock"  # root's, 0755, no pam.conf: the defaults
    safe.mkdir(mode=0o755)
    evil = tmp_path / "evil"
    evil.mkdir(mode=0o755)
    (evil / "pam.conf").write_text("[pam]\nliveness = no\n")
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)  # anyone may replace the link below
    link = open_dir / "cfg"
    link.symlink_to(safe)
    config = link / "pam.conf"
    real_check = pam._check_owner

    def racing_check(path, what, **kw):
        out = real_check(path, what, **kw)
        if what == "config file":  # the race won: re-point the link after the check
            link.unlink()
            link.symlink_to(evil)
        return out

    monkeypatch.setattr(pam, "_check_owner", racing_check)
    args = argparse.Namespace(config=str(config), source=None, seconds=None, level=None, no_liveness=None,
                              allow_remote=None, store=None, key_file=None)
    conf = pam._settings(args)
    assert conf["liveness"] is True, "a config planted after the check was read"


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="no interval timers")
def test_watchdog_gives_the_host_its_timer_back():
    assert threading.current_thread() is threading.main_thread()
    fired: list[int] = []
    old = signal.signal(signal.SIGALRM, lambda s, f: fired.append(s))
    try:
        signal.setitimer(signal.ITIMER_REAL, 50.0)  # the host's own timeout
        disarm = pam._watchdog(100)
        assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL
        disarm()
        left = signal.getitimer(signal.ITIMER_REAL)[0]
        assert 40.0 < left <= 50.0, f"the host's timer was not restored ({left} s left)"
        assert signal.getsignal(signal.SIGALRM) is not signal.SIG_DFL
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert fired == []


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="no interval timers")
def test_watchdog_without_a_host_timer_leaves_none_armed():
    disarm = pam._watchdog(100)
    assert signal.getitimer(signal.ITIMER_REAL)[0] > 90
    disarm()
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL
