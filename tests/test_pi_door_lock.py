"""examples/pi_door_lock.py on gpiozero's mock pin factory: no Pi, no camera."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import pytest

gpiozero = pytest.importorskip("gpiozero")
from gpiozero import LED, Device, OutputDevice  # noqa: E402
from gpiozero.pins.mock import MockFactory  # noqa: E402

import faceunlock as fu  # noqa: E402
from faceunlock import camera  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "faceunlock" / "data"


def _example():
    spec = importlib.util.spec_from_file_location("pi_door_lock", ROOT / "examples" / "pi_door_lock.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["pi_door_lock"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _views(src: Path, out: Path, n: int) -> Path:
    img = fu.load_image(src)
    out.mkdir()
    h, w = img.shape[:2]
    for i in range(n):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), -10 + 4 * i, 0.92 + 0.03 * (i % 3))
        cv2.imwrite(str(out / f"{i:03d}.png"), cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)[:, :, ::-1])
    return out


@pytest.fixture()
def pins():
    old = Device.pin_factory
    Device.pin_factory = MockFactory()
    yield Device.pin_factory
    Device.pin_factory.reset()
    Device.pin_factory = old


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("door")
    owner, other = _views(DATA / "astronaut.jpg", d / "owner", 6), _views(DATA / "grace_hopper.jpg", d / "other", 2)
    store = fu.TemplateStore(d / "s.fus", key_file=d / "s.key")
    unlocker = fu.FaceUnlock(store, liveness=False)  # stills: no liveness possible
    unlocker.enroll("astro", camera.open(owner).images())
    return unlocker, owner, other


def test_match_pulses_the_relay_and_led(pins, setup):
    unlocker, owner, other = setup
    relay, led = OutputDevice(17, initial_value=False), LED(27)
    sleeps = []
    door = _example().DoorLock(unlocker, relay, led, lambda: camera.open(owner), user="astro", open_s=5.0,
                               sleep=sleeps.append, log=lambda s: None)
    a = door.attempt()
    assert a.granted and a.reason == "granted"
    pins.pin(17).assert_states([False, True, False])  # energised once, then released
    assert sleeps == [5.0]
    assert not relay.value and not led.value


def test_impostor_and_identify(pins, setup):
    unlocker, owner, other = setup
    relay, led = OutputDevice(17, initial_value=False), LED(27)
    mod = _example()
    door = mod.DoorLock(unlocker, relay, led, lambda: camera.open(other), user="astro", sleep=lambda s: None,
                        log=lambda s: None)
    led.blink = lambda **kw: None  # no real-time blinking in tests
    a = door.attempt()
    assert not a.granted and a.reason == "no_match"
    pins.pin(17).assert_states([False])  # never energised
    anyone = mod.DoorLock(unlocker, relay, led, lambda: camera.open(owner), user=None, sleep=lambda s: None,
                          log=lambda s: None)
    a = anyone.attempt()
    assert a.granted and a.user == "astro"
    unlocker.reset_lockout("astro")


def test_main_once_with_mock_pins(pins, setup, tmp_path):
    unlocker, owner, _ = setup
    store = unlocker.store
    rc = _example().main(["--source", str(owner), "--store", str(store.path), "--key-file",
                          str(store.path.with_suffix(".key")), "--once", "--open-s", "0.01", "--no-liveness"])
    assert rc == 0
