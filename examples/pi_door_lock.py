#!/usr/bin/env python3
"""A face-unlocked door on a Raspberry Pi: camera → faceunlock → relay + LED.

Wiring (BCM numbering, change with the flags): a relay module's input on GPIO 17 (the
relay drives the door strike; it is energised for ``--open-s`` seconds on a match), a
status LED on GPIO 27 (on while the door is open, blinking after a denial, fast blinking
during a lockout), and optionally a push button on GPIO 22 to start an attempt (without
it the camera is checked continuously).

    sudo apt install python3-picamera2 python3-gpiozero            # Raspberry Pi OS Bookworm
    python3 -m venv --system-site-packages ~/fu && ~/fu/bin/pip install faceunlock
    ~/fu/bin/faceunlock enroll alice --source picamera             # once per person
    ~/fu/bin/python pi_door_lock.py --source picamera              # anyone enrolled
    ~/fu/bin/python pi_door_lock.py --source 0 --user alice        # USB camera, one user

Without a Pi (tests, CI): ``GPIOZERO_PIN_FACTORY=mock`` makes gpiozero simulate the
pins; ``tests/test_pi_door_lock.py`` drives this file that way. See docs/RASPBERRY_PI.md.

Safety: a face is not a strong lock. Keep a mechanical key or a PIN pad, wire the strike
fail-secure or fail-safe as fire rules require, and read the threat model in the README.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import faceunlock as fu
from faceunlock import camera


@dataclass
class Attempt:
    granted: bool
    user: str | None
    reason: str
    score: float | None
    ms: float


class DoorLock:
    """One door: an unlocker, a relay, an LED and a way to open the camera.

    ``relay`` and ``led`` are gpiozero output devices (``OutputDevice``/``LED``) or
    anything with ``on()``, ``off()`` (and ``blink()`` for the LED). ``open_camera()``
    returns a fresh :class:`faceunlock.camera.FrameSource` for each attempt, so the camera
    is free between attempts. ``user=None`` lets any enrolled user in (identify).
    """

    def __init__(self, unlocker: fu.FaceUnlock, relay, led, open_camera: Callable[[], camera.FrameSource], *,
                 user: str | None = None, open_s: float = 5.0, sleep: Callable[[float], None] = time.sleep,
                 log: Callable[[str], None] = print) -> None:
        self.unlocker, self.relay, self.led = unlocker, relay, led
        self.open_camera, self.user, self.open_s = open_camera, user, open_s
        self.sleep, self.log = sleep, log

    def attempt(self) -> Attempt:
        t0 = time.perf_counter()
        with self.open_camera() as cam:
            # (timestamp, frame) pairs: the attempt's limits and the liveness check run on
            # the camera's capture times
            if self.user is None:
                r = self.unlocker.identify(cam.timed())
                user, granted = r.user, r.user is not None
            else:
                r = self.unlocker.unlock(self.user, cam.timed())
                user, granted = self.user, r.granted
        a = Attempt(granted, user, r.reason.value, r.score, (time.perf_counter() - t0) * 1000)
        score = "-" if a.score is None else f"{a.score:.4f}"
        self.log(f"{'OPEN' if granted else 'closed'}: user={a.user or '-'} reason={a.reason} score={score} "
                 f"{a.ms:.0f} ms")
        if granted:
            self.open_door()
        else:
            self.signal_denied(locked=a.reason == "locked_out")
        return a

    def open_door(self) -> None:
        self.led.on()
        self.relay.on()
        try:
            self.sleep(self.open_s)
        finally:  # the strike is released whatever happens
            self.relay.off()
            self.led.off()

    def signal_denied(self, locked: bool) -> None:
        if hasattr(self.led, "blink"):
            t = 0.1 if locked else 0.3
            self.led.blink(on_time=t, off_time=t, n=3, background=False)
        self.led.off()

    def close(self) -> None:
        self.relay.off()
        self.led.off()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="picamera", help="picamera, a camera index, /dev/videoN, or a file")
    ap.add_argument("--user", help="only this user opens the door (default: anyone enrolled)")
    ap.add_argument("--store", help="template store (default: faceunlock's default store)")
    ap.add_argument("--key-file", help="key file of the store")
    ap.add_argument("--relay-pin", type=int, default=17)
    ap.add_argument("--led-pin", type=int, default=27)
    ap.add_argument("--button-pin", type=int, help="start an attempt on a button press (default: continuous)")
    ap.add_argument("--open-s", type=float, default=5.0, help="seconds the relay stays energised")
    ap.add_argument("--attempt-s", type=float, default=4.0, help="camera time per attempt")
    ap.add_argument("--pause-s", type=float, default=1.0, help="pause between continuous attempts")
    ap.add_argument("--once", action="store_true", help="one attempt, then exit (0 opened, 1 not)")
    ap.add_argument("--no-liveness", action="store_true", help="tests only: a photo can then open the door")
    args = ap.parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        _say("pi_door_lock: interrupted")
        return 130
    except _Fail as exc:
        _say(f"pi_door_lock: error: {exc}")
        return 2


class _Fail(Exception):
    """A setup problem: one line on stderr, exit 2."""


def _say(text: str) -> None:
    try:
        print(text, file=sys.stderr, flush=True)
    except Exception:
        pass


def _gpio(args):
    """The relay, LED and button, or _Fail with what to do (no gpiozero, not a Pi)."""
    try:
        import gpiozero
        from gpiozero import LED, Button, OutputDevice
    except ImportError:
        raise _Fail("the gpiozero package is not installed: sudo apt install python3-gpiozero "
                    "(or pip install gpiozero); off a Pi, GPIOZERO_PIN_FACTORY=mock simulates the pins") from None
    try:
        relay = OutputDevice(args.relay_pin, active_high=True, initial_value=False)
        led = LED(args.led_pin)
        button = Button(args.button_pin) if args.button_pin is not None else None
    except (gpiozero.GPIOZeroError, OSError, RuntimeError, ImportError) as exc:
        factory = os.environ.get("GPIOZERO_PIN_FACTORY") or "the default pin factory"
        raise _Fail(f"cannot drive the GPIO pins with {factory} ({type(exc).__name__}: {exc}); "
                    "is this a Raspberry Pi? Off a Pi, GPIOZERO_PIN_FACTORY=mock simulates the pins") from None
    return relay, led, button


def _run(args) -> int:
    import warnings

    warnings.simplefilter("ignore", category=Warning)  # gpiozero's fallback chatter: the error says it
    relay, led, button = _gpio(args)
    try:
        store_path = Path(args.store).expanduser() if args.store else fu.store.default_store_path()
        if not store_path.is_file():
            raise _Fail(f"no template store at {store_path}: enrol first (faceunlock enroll NAME --source "
                        f"{args.source}), or pass --store")
        store = fu.TemplateStore(store_path, key_file=args.key_file, create=False)
    except (fu.FaceUnlockError, OSError, RuntimeError) as exc:
        raise _Fail(str(exc)) from None
    unlocker = fu.FaceUnlock(store, engine=fu.FaceEngine(threads=1),
                             **({"liveness": False} if args.no_liveness else {}))
    door = DoorLock(unlocker, relay, led, lambda: camera.open(args.source, max_seconds=args.attempt_s),
                    user=args.user, open_s=args.open_s)
    print(f"door ready: source {args.source}, relay GPIO{args.relay_pin}, LED GPIO{args.led_pin}"
          + (f", button GPIO{args.button_pin}" if button else ", continuous"))
    try:
        while True:
            if button is not None:
                button.wait_for_press()
            try:
                a = door.attempt()
            except fu.CameraError as exc:
                _say(f"camera: {exc}")
                if args.once:
                    return 2
                time.sleep(5)
                continue
            except fu.FaceUnlockError as exc:  # the store went away, was tampered with, …
                raise _Fail(str(exc)) from None
            if args.once:
                return 0 if a.granted else 1
            time.sleep(args.pause_s)
    finally:
        door.close()


if __name__ == "__main__":
    sys.exit(main())
