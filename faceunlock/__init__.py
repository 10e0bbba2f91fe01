"""faceunlock: on-device face unlock — detect, align, embed, match, store, decide.

Nothing heavy happens at import: models load on first use. Images are (H, W, 3) uint8
RGB numpy arrays; OpenCV users pass ``frame[:, :, ::-1]`` (BGR → RGB).

    import faceunlock as fu
    engine = fu.FaceEngine()
    t = engine.template(fu.load_image("me.jpg"))
    fu.similarity(t, other) >= fu.DEFAULT_THRESHOLD
"""

from __future__ import annotations

from .detect import Face
from .embed import CONVENIENCE_THRESHOLD, DEFAULT_THRESHOLD, EmbedderSpec, similarity
from .engine import FaceEngine
from .errors import (
    CameraError,
    EnrollmentError,
    FaceUnlockError,
    ImageError,
    InsecurePermissionsError,
    ModelError,
    NoFaceError,
    RuntimeMissingError,
    StoreError,
    StoreIntegrityError,
)
from .image import as_rgb, load_image
from .liveness import Challenge, Liveness, LivenessResult
from .policy import Policy, PolicyError
from .store import StoreValueError, TemplateStore, UserRecord
from .unlock import EnrollmentReport, FaceUnlock, IdentifyResult, Reason, UnlockResult

__version__ = "0.2.2"

__all__ = [
    "__version__",
    "CONVENIENCE_THRESHOLD",
    "DEFAULT_THRESHOLD",
    "CameraError",
    "Challenge",
    "Liveness",
    "LivenessResult",
    "EmbedderSpec",
    "EnrollmentError",
    "Face",
    "FaceEngine",
    "FaceUnlock",
    "FaceUnlockError",
    "EnrollmentReport",
    "IdentifyResult",
    "Policy",
    "PolicyError",
    "Reason",
    "StoreValueError",
    "TemplateStore",
    "UnlockResult",
    "UserRecord",
    "ImageError",
    "InsecurePermissionsError",
    "ModelError",
    "NoFaceError",
    "RuntimeMissingError",
    "StoreError",
    "StoreIntegrityError",
    "as_rgb",
    "load_image",
    "similarity",
]
