"""Shared fixtures: the bundled public-domain portraits, one engine per session, dev data."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import faceunlock as fu

DATA_DIR = Path(fu.__file__).resolve().parent / "data"
SHARED_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces-dev"


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """scikit-image's astronaut (Eileen Collins), 512×512 RGB, one frontal face."""
    return fu.load_image(DATA_DIR / "astronaut.jpg")


@pytest.fixture(scope="session")
def grace_hopper() -> np.ndarray:
    """matplotlib's Grace Hopper portrait, 600×512 RGB, one frontal face."""
    return fu.load_image(DATA_DIR / "grace_hopper.jpg")


@pytest.fixture(scope="session")
def engine() -> fu.FaceEngine:
    """One engine for the whole session (models load once)."""
    return fu.FaceEngine(threads=1)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The faces-dev development set next to the repository; skips when it is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"dev data not found: {SHARED_DIR}")
    return SHARED_DIR


# ---------------------------------------------------------------- image helpers for tests


def rotate(image: np.ndarray, angle_deg: float, scale: float = 1.0, border=cv2.BORDER_REFLECT) -> np.ndarray:
    """``image`` rotated counter-clockwise on screen by ``angle_deg`` about its centre."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle_deg, scale)
    return cv2.warpAffine(image, m, (w, h), borderMode=border)


def box_iou(a, b) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def write_views(src: Path, out: Path, n: int = 6) -> Path:
    """``n`` slightly rotated and scaled copies of the image ``src`` written as PNGs into the
    new folder ``out`` (an image-folder frame source for CLI and PAM tests)."""
    img = fu.load_image(src)
    out.mkdir(parents=True)
    h, w = img.shape[:2]
    for i in range(n):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), -10 + 4 * i, 0.92 + 0.03 * (i % 3))
        cv2.imwrite(str(out / f"{i:03d}.png"), cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)[:, :, ::-1])
    return out


def eye_landmarks(ear: float) -> np.ndarray:
    """(468, 3) landmarks (pixels) whose both eyes have eye aspect ratio ``ear``."""
    from faceunlock.liveness import blink as B

    lm = np.zeros((468, 3))
    for eye, x0 in ((B.RIGHT_EYE, 100.0), (B.LEFT_EYE, 200.0)):
        p1, p2, p3, p4, p5, p6 = eye
        lm[p1, :2], lm[p4, :2] = (x0, 100), (x0 + 40, 100)
        for up, down, x in ((p2, p6, x0 + 13), (p3, p5, x0 + 27)):
            lm[up, :2], lm[down, :2] = (x, 100 - 20 * ear), (x, 100 + 20 * ear)
    return lm


PAM_HOST_VARIABLES = ("PAM_RHOST", "PAM_TTY", "XDG_SESSION_ID", "SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY")


def pam_call_environment(monkeypatch, user: str = "alice", *, also_unset: tuple[str, ...] = ()) -> list[str]:
    """A local PAM 'auth' call for ``user``, as pam_exec would make it, for in-process tests of
    ``faceunlock.pam.run``: remote markers unset (and ``also_unset``), file sources allowed
    (the test switch), the test runner's own ancestry and logind sessions not consulted.
    Returns the list that collects pam-auth's log lines instead of syslog."""
    from faceunlock import pam

    for k in PAM_HOST_VARIABLES + tuple(also_unset):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("PAM_USER", user)
    monkeypatch.setenv("PAM_TYPE", "auth")
    monkeypatch.setenv(pam.TEST_SOURCES_ENV, "1")
    monkeypatch.setattr(pam, "_ancestors", lambda: [])
    monkeypatch.setattr(pam, "_SESSIONS", Path("/nonexistent-logind-sessions"))
    logged: list[str] = []
    monkeypatch.setattr(pam, "_log", lambda prio, msg: logged.append(msg))
    return logged
