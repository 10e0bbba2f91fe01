"""Frame sources: webcams, V4L2 devices, the Raspberry Pi camera, video files, image folders.

    import faceunlock as fu
    from faceunlock import camera

    with camera.open(0) as cam:                 # OpenCV webcam index
        for frame in cam:                       # Frame(image=RGB uint8, timestamp_s, index)
            ...
    with camera.open("clip.mp4") as cam:
        result = unlocker.unlock("alice", cam.images())   # plain RGB arrays

``source`` may be an ``int`` (OpenCV camera index), ``"/dev/videoN"``, ``"picamera"``
(Picamera2, when installed), a video file, a folder of images, or one image file.
Every frame is an (H, W, 3) uint8 **RGB** array. Live cameras drop their first
``warmup`` frames (auto-exposure settles); files and folders start at their first frame
unless ``skip_s`` is given. The device is released when the ``with`` block ends, however
it ends (exception, ``break``, generator closed). A missing, busy or forbidden camera
raises :class:`~faceunlock.CameraError` with what to do about it.

This module imports neither the engine nor the store.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Union

import numpy as np

from .errors import CameraError, ImageError

__all__ = ["Frame", "FrameSource", "open", "describe", "list_video_devices", "IMAGE_SUFFIXES", "VIDEO_SUFFIXES"]

SourceLike = Union[int, str, "os.PathLike[str]"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")
DEFAULT_WARMUP = 5
#: consecutive failed reads from a live camera before it counts as stopped
MAX_READ_FAILURES = 10
#: nominal rate used for the timestamps of image folders (frames have no time of their own)
FOLDER_FPS = 30.0

_DEV_RE = re.compile(r"^/dev/video(\d+)$")


@dataclass(frozen=True)
class Frame:
    """One frame: ``image`` (H, W, 3) uint8 RGB; ``timestamp_s`` seconds since the source
    opened (live cameras: monotonic clock; files: position in the video); ``index``
    counts delivered frames from 0."""

    image: np.ndarray
    timestamp_s: float
    index: int


def _cv2():
    import cv2

    return cv2


# Factories, replaceable in tests (a fake capture proves the release and error paths
# without V4L2 hardware).
def _video_capture(target: Any, api: int | None = None):
    cv2 = _cv2()
    return cv2.VideoCapture(target) if api is None else cv2.VideoCapture(target, api)


def _picamera2_class():
    from picamera2 import Picamera2  # type: ignore[import-not-found]

    return Picamera2


class FrameSource:
    """A context manager and iterator of :class:`Frame`. Use :func:`open` to make one.

    ``images()`` yields the RGB arrays alone (what :class:`~faceunlock.FaceUnlock`
    takes). ``max_frames`` / ``max_seconds`` end the stream (None = until the source
    ends; a live camera never ends by itself). ``close()`` is idempotent.
    """

    kind = "source"

    def __init__(self, name: str, *, max_frames: int | None = None, max_seconds: float | None = None) -> None:
        if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
            raise ValueError(f"max_frames must be a positive int or None, got {max_frames!r}")
        if max_seconds is not None and not max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0 or None, got {max_seconds!r}")
        self.name = name
        self.max_frames = max_frames
        self.max_seconds = max_seconds
        self.closed = False
        self._opened = False
        self._t0 = 0.0
        self._count = 0

    # -- subclass hooks
    def _open(self) -> None:
        raise NotImplementedError

    def _read(self) -> tuple[np.ndarray, float] | None:
        """Next (RGB image, timestamp_s) or None at the end."""
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    # -- public
    def start(self) -> "FrameSource":
        if self.closed:
            raise CameraError(f"{self.describe()} is closed")
        if not self._opened:
            self._t0 = time.monotonic()
            try:
                self._open()
            except BaseException:
                self.close()
                raise
            self._opened = True
        return self

    def __enter__(self) -> "FrameSource":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self._release()
            except Exception:  # releasing must never mask the original error
                pass

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def read(self) -> Frame | None:
        """The next frame, or None when the source ended or a limit was reached."""
        self.start()
        if self.max_frames is not None and self._count >= self.max_frames:
            return None
        if self.max_seconds is not None and time.monotonic() - self._t0 > self.max_seconds:
            return None
        got = self._read()
        if got is None:
            return None
        image, ts = got
        frame = Frame(image, ts, self._count)
        self._count += 1
        return frame

    def __iter__(self) -> Iterator[Frame]:
        while not self.closed:
            f = self.read()
            if f is None:
                return
            yield f

    def images(self) -> Iterator[np.ndarray]:
        """The frames' RGB arrays alone."""
        for f in self:
            yield f.image

    def timed(self) -> Iterator[tuple[float, np.ndarray]]:
        """``(timestamp_s, RGB array)`` pairs: what :meth:`FaceUnlock.unlock` and the
        liveness check take to know the real timing of the frames."""
        for f in self:
            yield f.timestamp_s, f.image

    def describe(self) -> str:
        return f"{self.kind} {self.name}"

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("open" if self._opened else "not started")
        return f"<{type(self).__name__} {self.name!r} {state}>"


# ---------------------------------------------------------------------------- live cameras
def _device_path(index: int) -> str:
    return f"/dev/video{index}"


def _check_device(path: str) -> None:
    """Clear errors for a V4L2 node that is missing, not a device, or not ours to open."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        found = ", ".join(list_video_devices()) or "none"
        raise CameraError(f"no camera at {path} (video devices present: {found}); "
                          "check the cable, or pass another --source") from None
    except PermissionError:
        raise CameraError(f"permission denied for {path}: add the user to the 'video' group "
                          "(sudo usermod -aG video $USER, then log in again)") from None
    if not stat.S_ISCHR(st.st_mode):
        raise CameraError(f"{path} is not a video device")
    if not os.access(path, os.R_OK | os.W_OK):
        raise CameraError(f"permission denied for {path}: add the user to the 'video' group "
                          "(sudo usermod -aG video $USER, then log in again)")


def list_video_devices() -> list[str]:
    """``/dev/video*`` nodes present, sorted by number (an empty list off Linux)."""
    try:
        names = os.listdir("/dev")
    except OSError:
        return []
    devs = [f"/dev/{n}" for n in names if re.fullmatch(r"video\d+", n)]
    return sorted(devs, key=lambda p: int(p[len("/dev/video"):]))


class OpenCVCamera(FrameSource):
    """A webcam through OpenCV (V4L2 on Linux). Frames are converted BGR → RGB."""

    kind = "camera"

    def __init__(self, target: int | str, *, width: int | None = None, height: int | None = None,
                 fps: float | None = None, warmup: int = DEFAULT_WARMUP, **kw: Any) -> None:
        super().__init__(str(target), **kw)
        self.target = target
        self.width, self.height, self.fps = width, height, fps
        self.warmup = max(0, int(warmup))
        self._cap = None
        self._failures = 0

    def _open(self) -> None:
        cv2 = _cv2()
        path = _device_path(self.target) if isinstance(self.target, int) else self.target
        if sys.platform.startswith("linux"):
            _check_device(path)
            api = cv2.CAP_V4L2
        else:
            api = None
        cap = _video_capture(path if api is not None else self.target, api)
        self._cap = cap
        if not cap.isOpened():
            raise CameraError(f"cannot open the camera {path}: it may be busy (another program is "
                              "using it) or not a capture device")
        try:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a stale queue
            if self.width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            if self.height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            if self.fps:
                cap.set(cv2.CAP_PROP_FPS, self.fps)
        except Exception:
            pass
        for _ in range(self.warmup):
            if self._grab() is None:
                break
        else:
            return
        raise CameraError(f"the camera {path} opened but delivers no frames: it is probably busy "
                          "(another program is streaming from it) or was unplugged")

    def _grab(self) -> np.ndarray | None:
        """One frame, allowing a few transient read failures; None when the camera stopped."""
        assert self._cap is not None
        for _ in range(MAX_READ_FAILURES):
            ok, bgr = self._cap.read()
            if ok and bgr is not None and getattr(bgr, "size", 0):
                self._failures = 0
                return _bgr_to_rgb(bgr)
            time.sleep(0.01)
        return None

    def _read(self) -> tuple[np.ndarray, float] | None:
        img = self._grab()
        if img is None:
            raise CameraError(f"the camera {self.name} stopped delivering frames (unplugged or taken by "
                              "another program?)")
        return img, time.monotonic() - self._t0

    def _release(self) -> None:
        if self._cap is not None:
            cap, self._cap = self._cap, None
            cap.release()


class PiCamera(FrameSource):
    """The Raspberry Pi camera through Picamera2 (``sudo apt install python3-picamera2``)."""

    kind = "picamera"

    def __init__(self, *, width: int | None = None, height: int | None = None, warmup: int = DEFAULT_WARMUP,
                 camera_num: int = 0, **kw: Any) -> None:
        super().__init__("picamera" if camera_num == 0 else f"picamera:{camera_num}", **kw)
        self.size = (int(width or 640), int(height or 480))
        self.warmup = max(0, int(warmup))
        self.camera_num = camera_num
        self._cam = None

    def _open(self) -> None:
        try:
            cls = _picamera2_class()
        except ImportError:
            raise CameraError(
                "Picamera2 is not installed: on Raspberry Pi OS run 'sudo apt install python3-picamera2' "
                "and make the venv with --system-site-packages (see docs/RASPBERRY_PI.md)"
            ) from None
        try:
            cam = cls(self.camera_num)
        except (IndexError, RuntimeError) as exc:
            raise CameraError(f"no Raspberry Pi camera found or it is busy ({exc}); check the ribbon "
                              "cable and 'rpicam-hello --list-cameras'") from None
        self._cam = cam
        # Picamera2's "BGR888" is stored [R, G, B] per pixel (DRM naming): RGB as we want it.
        cam.configure(cam.create_video_configuration(main={"size": self.size, "format": "BGR888"}))
        cam.start()
        for _ in range(self.warmup):
            cam.capture_array("main")

    def _read(self) -> tuple[np.ndarray, float] | None:
        assert self._cam is not None
        img = np.ascontiguousarray(self._cam.capture_array("main")[:, :, :3])
        return img, time.monotonic() - self._t0

    def _release(self) -> None:
        if self._cam is not None:
            cam, self._cam = self._cam, None
            try:
                cam.stop()
            finally:
                cam.close()


# ---------------------------------------------------------------------------- files
class VideoFile(FrameSource):
    """A video file decoded by OpenCV; timestamps are positions in the video."""

    kind = "video"

    def __init__(self, path: Path, *, skip_s: float = 0.0, step: int = 1, **kw: Any) -> None:
        super().__init__(str(path), **kw)
        self.path = path
        self.skip_s = float(skip_s)
        self.step = max(1, int(step))
        self._cap = None
        self.fps = 0.0
        self._pos = 0

    def _open(self) -> None:
        cv2 = _cv2()
        cap = _video_capture(str(self.path))
        self._cap = cap
        if not cap.isOpened():
            raise CameraError(f"cannot decode the video {self.path} (unsupported or damaged file)")
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not 0 < self.fps < 1000:
            self.fps = 30.0
        # Skip by decoding (exact for every codec; seeking lands on key frames).
        for _ in range(int(round(self.skip_s * self.fps))):
            if not cap.grab():
                break
            self._pos += 1

    def _read(self) -> tuple[np.ndarray, float] | None:
        assert self._cap is not None
        for _ in range(self.step - 1):
            if not self._cap.grab():
                return None
            self._pos += 1
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            return None
        ts = self._pos / self.fps  # frame number / nominal rate: exact and monotonic
        self._pos += 1
        return _bgr_to_rgb(bgr), ts

    def _release(self) -> None:
        if self._cap is not None:
            cap, self._cap = self._cap, None
            cap.release()


class ImageFolder(FrameSource):
    """Image files of a folder in name order (or one image file); timestamps at FOLDER_FPS."""

    kind = "folder"

    def __init__(self, path: Path, *, files: list[Path] | None = None, skip_s: float = 0.0, **kw: Any) -> None:
        super().__init__(str(path), **kw)
        self.path = path
        self.files = files
        self._skip = int(round(skip_s * FOLDER_FPS))
        self._i = 0

    def _open(self) -> None:
        if self.files is None:
            try:
                self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            except PermissionError:
                raise CameraError(f"permission denied reading the folder {self.path}") from None
            if not self.files:
                raise CameraError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder {self.path}")
        self._i = self._skip

    def _read(self) -> tuple[np.ndarray, float] | None:
        from .image import load_image

        assert self.files is not None
        if self._i >= len(self.files):
            return None
        p = self.files[self._i]
        self._i += 1
        try:
            img = load_image(p)
        except ImageError as exc:
            raise CameraError(f"cannot read frame {p}: {exc}") from None
        return img, (self._i - 1) / FOLDER_FPS

    def _release(self) -> None:
        self.files = self.files  # nothing held open between frames


def _bgr_to_rgb(bgr: np.ndarray) -> np.ndarray:
    if bgr.ndim == 2:
        return np.ascontiguousarray(np.repeat(bgr[:, :, None], 3, axis=2))
    if bgr.shape[2] == 4:
        bgr = bgr[:, :, :3]
    return np.ascontiguousarray(bgr[:, :, ::-1])


# ---------------------------------------------------------------------------- entry point
def describe(source: SourceLike) -> str:
    """What kind of source ``source`` names, without opening it: 'camera', 'picamera',
    'video', 'folder', 'image' or 'missing'."""
    if isinstance(source, int) and not isinstance(source, bool):
        return "camera"
    s = os.fspath(source)
    if s.strip().isdigit() or _DEV_RE.match(s):
        return "camera"
    if s.lower().startswith("picamera"):
        return "picamera"
    p = Path(s).expanduser()
    if p.is_dir():
        return "folder"
    if p.is_file():
        return "image" if p.suffix.lower() in IMAGE_SUFFIXES else "video"
    return "missing"


def open(  # noqa: A001 - the module is used as ``camera.open``
    source: SourceLike,
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    warmup: int = DEFAULT_WARMUP,
    skip_s: float = 0.0,
    step: int = 1,
    max_frames: int | None = None,
    max_seconds: float | None = None,
) -> FrameSource:
    """Open a frame source (see the module docstring); use it in a ``with`` block.

    Args:
        source: int camera index, ``"/dev/videoN"``, ``"picamera"`` (or ``"picamera:N"``),
            a video file, a folder of images or one image file.
        width, height, fps: requested capture size and rate for live cameras (best effort).
        warmup: frames dropped after a live camera starts (auto-exposure settling).
        skip_s: for files and folders, seconds of the recording to skip first.
        step: for video files, keep every ``step``-th frame.
        max_frames, max_seconds: end the stream after this many frames / seconds.

    Raises:
        CameraError: the source does not exist, cannot be opened, is busy or forbidden
            (raised at the latest when the ``with`` block is entered).
    """
    limits = dict(max_frames=max_frames, max_seconds=max_seconds)
    kind = describe(source)
    if kind == "camera":
        if isinstance(source, int):
            target: int | str = source
        else:
            s = os.fspath(source).strip()
            target = int(s) if s.isdigit() else s
        return OpenCVCamera(target, width=width, height=height, fps=fps, warmup=warmup, **limits)
    if kind == "picamera":
        s = os.fspath(source)
        num = int(s.split(":", 1)[1]) if ":" in s else 0
        return PiCamera(width=width, height=height, warmup=warmup, camera_num=num, **limits)
    p = Path(os.fspath(source)).expanduser()
    if kind == "folder":
        return ImageFolder(p, skip_s=skip_s, **limits)
    if kind == "image":
        return ImageFolder(p, files=[p], **limits)
    if kind == "video":
        if not os.access(p, os.R_OK):
            raise CameraError(f"permission denied reading {p}")
        return VideoFile(p, skip_s=skip_s, step=step, **limits)
    raise CameraError(f"no such camera, file or folder: {os.fspath(source)!r} (a source is a camera index, "
                      "/dev/videoN, 'picamera', a video file or a folder of images)")


def probe_cameras(timeout_frames: int = 3, opener: Callable[..., FrameSource] | None = None) -> list[dict]:
    """Try every ``/dev/video*`` node briefly: [{'device', 'ok', 'detail'}]. For ``doctor``."""
    out = []
    for dev in list_video_devices():
        try:
            with (opener or open)(dev, warmup=0, max_frames=timeout_frames) as cam:
                f = cam.read()
                detail = f"{f.image.shape[1]}x{f.image.shape[0]}" if f is not None else "no frame"
                out.append({"device": dev, "ok": f is not None, "detail": detail})
        except CameraError as exc:
            out.append({"device": dev, "ok": False, "detail": str(exc)})
        except OSError as exc:
            out.append({"device": dev, "ok": False, "detail": os.strerror(exc.errno or errno.EIO)})
    return out
