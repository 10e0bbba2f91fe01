"""The one exception hierarchy of faceunlock.

Every error the library raises on purpose derives from :class:`FaceUnlockError`,
so an application can catch that one class at its boundary.
"""

from __future__ import annotations

__all__ = [
    "FaceUnlockError",
    "ImageError",
    "NoFaceError",
    "ModelError",
    "RuntimeMissingError",
    "StoreError",
    "StoreIntegrityError",
    "InsecurePermissionsError",
    "EnrollmentError",
    "CameraError",
]


class FaceUnlockError(Exception):
    """Base class of every error raised by faceunlock."""


class ImageError(FaceUnlockError, ValueError):
    """An input image is unusable: wrong dtype, shape, channel count, non-finite
    values, empty, or a file that is missing or cannot be decoded."""


class NoFaceError(FaceUnlockError):
    """No face was found where one was required."""


class ModelError(FaceUnlockError):
    """A shipped or imported model file is missing, corrupt or incompatible."""


class RuntimeMissingError(ModelError, ImportError):
    """Neither TFLite runtime (``ai-edge-litert`` nor ``tflite-runtime``) is installed."""


class StoreError(FaceUnlockError):
    """A template store cannot be used (missing key, bad arguments, I/O failure)."""


class StoreIntegrityError(StoreError):
    """Stored data failed authentication.

    Raised for every way that can happen — a flipped byte, truncation, an empty
    file, a wrong key or passphrase, records swapped between users — on purpose
    with one opaque message, so that the error is no oracle for an attacker.
    The file is never modified when this is raised.
    """


class InsecurePermissionsError(StoreError):
    """A store or key file, or its directory, lets other users read the key or replace the
    store (a world-writable directory, a key file readable by group/others, …).

    The one-line message names the path and the ``chmod`` that fixes it; nothing is read
    from or written to such a location.
    """


class EnrollmentError(FaceUnlockError):
    """Enrolment did not collect enough good frames; the message says why."""


class CameraError(FaceUnlockError):
    """A frame source is missing, busy, forbidden or stopped delivering frames."""
