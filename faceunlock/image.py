"""Loading images and checking frames before they reach a model.

Convention everywhere in faceunlock: an image is a numpy array of shape
(H, W, 3), dtype uint8, channels in **RGB** order, pixel (0, 0) at the top-left.
OpenCV delivers BGR: pass ``frame[:, :, ::-1]`` or
``cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)`` (or ``as_rgb(frame, bgr=True)``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import ImageError

__all__ = ["load_image", "as_rgb"]

# EXIF orientation tag value -> (rotation k for np.rot90 counter-clockwise, flip left-right first)
_EXIF_ORIENTATION = {
    1: (0, False),
    2: (0, True),
    3: (2, False),
    4: (2, True),
    5: (1, True),
    6: (3, False),
    7: (3, True),
    8: (1, False),
}


def as_rgb(image: object, *, bgr: bool = False) -> np.ndarray:
    """Validate ``image`` and return it as a C-contiguous (H, W, 3) uint8 RGB array.

    Accepts (H, W) grey, (H, W, 1) grey, (H, W, 3) RGB and (H, W, 4) RGBA (alpha is
    dropped, not composited). ``bgr=True`` says the input channels are BGR/BGRA
    (OpenCV's order) and swaps them. Float input is not guessed at: it raises, because
    0..1 and 0..255 conventions cannot be told apart safely.

    Raises :class:`ImageError` (also a ``ValueError``) naming the problem.
    """
    if not isinstance(image, np.ndarray):
        raise ImageError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating) and image.size and not np.all(np.isfinite(image)):
            raise ImageError("image has non-finite values (NaN or inf); expected uint8 RGB")
        raise ImageError(
            f"image dtype must be uint8 (0..255 RGB), got {image.dtype}; "
            "convert with np.clip(x, 0, 255).astype(np.uint8)"
        )
    if image.size == 0:
        raise ImageError(f"image is empty (shape {image.shape})")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3:
        channels = image.shape[2]
        if channels == 1:
            image = np.repeat(image, 3, axis=2)
        elif channels == 4:
            image = image[:, :, :3]
        elif channels != 3:
            raise ImageError(
                f"image must have 1, 3 or 4 channels, got {channels} (shape {image.shape})"
            )
        if bgr and channels in (3, 4):
            image = image[:, :, ::-1]
    else:
        raise ImageError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ImageError(f"image is too small: {image.shape[1]}x{image.shape[0]} pixels")
    return np.ascontiguousarray(image)


def _exif_orientation(data: bytes) -> int:
    """Orientation tag (1..8) of a JPEG's EXIF block, or 1 when absent/unreadable."""
    i = data.find(b"Exif\x00\x00")
    if i < 0 or i > 65536:
        return 1
    tiff = data[i + 6 :]
    if len(tiff) < 8:
        return 1
    order = tiff[:2]
    if order not in (b"II", b"MM"):
        return 1
    endian = "little" if order == b"II" else "big"

    def u16(off: int) -> int:
        return int.from_bytes(tiff[off : off + 2], endian)

    def u32(off: int) -> int:
        return int.from_bytes(tiff[off : off + 4], endian)

    ifd = u32(4)
    if ifd + 2 > len(tiff):
        return 1
    for k in range(u16(ifd)):
        entry = ifd + 2 + 12 * k
        if entry + 12 > len(tiff):
            break
        if u16(entry) == 0x0112:
            value = u16(entry + 8)
            return value if value in _EXIF_ORIENTATION else 1
    return 1


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file into (H, W, 3) uint8 RGB with its EXIF orientation applied.

    Any format OpenCV decodes (JPEG, PNG, PGM/PPM, BMP, TIFF, WebP). Grey and
    RGBA files are converted to RGB. Raises :class:`ImageError` when the file is
    missing, unreadable or not an image.
    """
    import cv2  # local: importing faceunlock stays light

    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"image file not found: {p}") from None
    except IsADirectoryError:
        raise ImageError(f"image path is a directory, not a file: {p}") from None
    except OSError as exc:
        raise ImageError(f"cannot read image file {p}: {exc.strerror or exc}") from None
    if not data:
        raise ImageError(f"image file is empty: {p}")
    buf = np.frombuffer(data, dtype=np.uint8)
    # IGNORE_ORIENTATION: we apply EXIF ourselves so behaviour does not depend on the OpenCV build.
    flags = cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION
    decoded = cv2.imdecode(buf, flags)
    if decoded is None:
        raise ImageError(f"cannot decode image file (not an image or corrupt): {p}")
    if decoded.dtype == np.uint16:
        decoded = (decoded >> 8).astype(np.uint8)
    if decoded.dtype != np.uint8:
        raise ImageError(f"unsupported image sample type {decoded.dtype} in {p}")
    rgb = as_rgb(decoded, bgr=decoded.ndim == 3)
    k, flip = _EXIF_ORIENTATION[_exif_orientation(data[:131072])]
    if flip:
        rgb = rgb[:, ::-1]
    if k:
        rgb = np.rot90(rgb, k)
    return np.ascontiguousarray(rgb)
