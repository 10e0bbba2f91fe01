"""Exactly one installed distribution provides the ``cv2`` package.

opencv-python-headless, opencv-python, opencv-contrib-python(-headless) all install into
the same ``cv2/`` folder; two of them overwrite each other's files, so the tests would run
on a different OpenCV than users get (and a GUI build can abort without a display). The
``[dev]`` extra must therefore not pull a second one (mediapipe did: it is tested in its
own venv by .ci/run)."""

from __future__ import annotations

import importlib.metadata as md


def cv2_distributions() -> list[str]:
    """Names of the installed distributions whose files or top_level.txt include cv2."""
    names = set()
    for dist in md.distributions():
        files = dist.files or []
        top = (dist.read_text("top_level.txt") or "").split()
        if "cv2" in top or any(f.parts and f.parts[0] == "cv2" for f in files):
            names.add(dist.metadata["Name"])
    return sorted(names)


def test_exactly_one_distribution_provides_cv2():
    found = cv2_distributions()
    assert len(found) == 1, f"cv2 is provided by {found}: install exactly one OpenCV distribution"
