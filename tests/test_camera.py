"""Frame sources without V4L2 hardware: a generated video file, image folders, and fake
captures for the error and release paths."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceunlock import CameraError, camera


def _write_video(path: Path, n: int = 12, fps: float = 10.0) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    assert w.isOpened()
    for i in range(n):
        bgr = np.zeros((48, 64, 3), np.uint8)
        bgr[:, :, 2] = 250  # red in BGR
        bgr[:4, :4] = i * 20
        w.write(bgr)
    w.release()
    return path


@pytest.fixture()
def video(tmp_path):
    return _write_video(tmp_path / "clip.avi")


def test_video_file_frames_are_rgb_with_timestamps(video):
    with camera.open(video) as cam:
        frames = list(cam)
    assert len(frames) == 12
    f = frames[0]
    assert f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8
    assert f.image[24, 32, 0] > 200 and f.image[24, 32, 2] < 50  # R high, B low: RGB order
    ts = [fr.timestamp_s for fr in frames]
    assert ts[0] == pytest.approx(0.0) and ts[1] == pytest.approx(0.1, abs=1e-3)
    assert all(b > a for a, b in zip(ts, ts[1:]))
    assert [fr.index for fr in frames] == list(range(12))
    assert cam.closed


def test_video_skip_limits_and_images(video):
    with camera.open(video, skip_s=0.5, max_frames=3) as cam:
        frames = list(cam)
    assert len(frames) == 3 and frames[0].timestamp_s == pytest.approx(0.5, abs=1e-3)
    with camera.open(video) as cam:
        imgs = list(cam.images())
    assert len(imgs) == 12 and isinstance(imgs[0], np.ndarray)


def test_folder_and_single_image(tmp_path):
    for i in (2, 0, 1):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((20, 30, 3), (0, 0, 200 + i), np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    with camera.open(tmp_path) as cam:
        frames = list(cam)
    assert [int(f.image[0, 0, 0]) for f in frames] == [200, 201, 202]  # name order, RGB
    assert frames[1].timestamp_s == pytest.approx(1 / camera.FOLDER_FPS)
    with camera.open(tmp_path / "f1.png") as cam:
        assert len(list(cam)) == 1
    assert camera.describe(tmp_path) == "folder" and camera.describe(tmp_path / "f1.png") == "image"


def test_missing_sources_raise_clear_errors(tmp_path):
    with pytest.raises(CameraError, match="no such camera, file or folder"):
        camera.open(tmp_path / "nope.mp4")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CameraError, match="no images"):
        with camera.open(empty):
            pass
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(CameraError, match="cannot decode"):
        with camera.open(bad):
            pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="V4L2 paths")
def test_missing_and_forbidden_device(monkeypatch):
    with pytest.raises(CameraError, match="no camera at /dev/video99"):
        with camera.open("/dev/video99"):
            pass
    with pytest.raises(CameraError, match="not a video device"):
        camera._check_device("/etc/hostname" if Path("/etc/hostname").exists() else __file__)
    monkeypatch.setattr(camera.os, "access", lambda *a, **k: False)
    with pytest.raises(CameraError, match="permission denied.*video' group"):
        camera._check_device("/dev/null")  # a character device we may not "open"


class FakeCapture:
    """cv2.VideoCapture stand-in: ``frames`` BGR images (None = a failed read)."""

    instances: list["FakeCapture"] = []

    def __init__(self, frames, opened=True):
        self.frames = list(frames)
        self.opened = opened
        self.released = 0
        FakeCapture.instances.append(self)

    def isOpened(self):
        return self.opened

    def set(self, *a):
        return True

    def get(self, *a):
        return 0.0

    def read(self):
        if not self.frames:
            return False, None
        f = self.frames.pop(0)
        return (f is not None), f

    def release(self):
        self.released += 1


def _fake(monkeypatch, frames, opened=True):
    caps = []

    def factory(target, api=None):
        c = FakeCapture(frames, opened)
        caps.append(c)
        return c

    monkeypatch.setattr(camera, "_video_capture", factory)
    monkeypatch.setattr(camera, "_check_device", lambda path: None)
    return caps


def _bgr(v):
    return np.full((8, 8, 3), v, np.uint8)


def test_live_camera_warmup_rgb_and_release(monkeypatch):
    frames = [_bgr(i) for i in range(10)]
    frames[7][:, :, 0] = 255  # blue channel in BGR
    caps = _fake(monkeypatch, frames)
    with camera.open(3, warmup=5, max_frames=3) as cam:
        got = list(cam)
    assert [int(f.image[0, 0, 1]) for f in got] == [5, 6, 7]  # first 5 dropped
    assert got[2].image[0, 0, 2] == 255  # BGR blue → RGB channel 2
    assert caps[0].released == 1 and cam.closed


def test_busy_camera_and_stopped_camera(monkeypatch):
    caps = _fake(monkeypatch, [None] * 100)
    with pytest.raises(CameraError, match="busy"):
        with camera.open("/dev/video5"):
            pass
    assert caps[0].released == 1
    caps = _fake(monkeypatch, [], opened=False)
    with pytest.raises(CameraError, match="cannot open the camera /dev/video0"):
        camera.open(0).start()
    assert caps[0].released == 1
    caps = _fake(monkeypatch, [_bgr(1)] * 3 + [None] * 50)
    with pytest.raises(CameraError, match="stopped delivering"):
        with camera.open(0, warmup=1) as cam:
            list(cam)
    assert caps[0].released == 1


def test_released_on_exception_and_break(monkeypatch):
    caps = _fake(monkeypatch, [_bgr(1)] * 50)
    with pytest.raises(RuntimeError):
        with camera.open(0, warmup=0) as cam:
            for _ in cam:
                raise RuntimeError("boom")
    assert caps[0].released == 1
    caps = _fake(monkeypatch, [_bgr(1)] * 50)
    with camera.open(0, warmup=0) as cam:
        for _ in cam.images():
            break
    assert caps[0].released == 1
    cam.close()
    assert caps[0].released == 1  # idempotent


def test_picamera_missing_and_fake(monkeypatch):
    def missing():
        raise ImportError("no picamera2")

    monkeypatch.setattr(camera, "_picamera2_class", missing)
    with pytest.raises(CameraError, match="python3-picamera2"):
        with camera.open("picamera"):
            pass

    class FakePi:
        closed = 0

        def __init__(self, num):
            self.n = 0

        def create_video_configuration(self, main):
            assert main["format"] == "BGR888"  # Picamera2's name for [R, G, B] bytes
            return main

        def configure(self, cfg):
            self.size = cfg["size"]

        def start(self):
            pass

        def capture_array(self, name):
            self.n += 1
            return np.full((self.size[1], self.size[0], 3), self.n, np.uint8)

        def stop(self):
            pass

        def close(self):
            FakePi.closed += 1

    monkeypatch.setattr(camera, "_picamera2_class", lambda: FakePi)
    with camera.open("picamera", width=32, height=24, warmup=2, max_frames=2) as cam:
        got = list(cam)
    assert got[0].image.shape == (24, 32, 3) and int(got[0].image[0, 0, 0]) == 3
    assert FakePi.closed == 1
