"""The built wheel ships only free weights: no ONNX, exactly the TFLite models listed (with
their sha256) in faceunlock/models/MODELS.md, nothing large but the dlib model, nothing of
insightface's, and the licence texts and NOTICE that the shipped weights require."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 12 * 1024 * 1024
DLIB_FILE = "faceunlock/models/dlib_resnet_v1_fp16.tflite"
FORBIDDEN_NAMES = ("insightface", "w600k", "buffalo", "arcface", "mbf.", "webface")


def _shipped_sha256() -> dict[str, str]:
    """file name → sha256 of the shipped .tflite files, read from MODELS.md's table."""
    out = {}
    for line in (ROOT / "faceunlock" / "models" / "MODELS.md").read_text().splitlines():
        m = re.match(r"\|\s*`([^`]+\.tflite)`\s*\|", line)
        if m:
            shas = re.findall(r"`([0-9a-f]{64})`", line)
            cell = line.rstrip("|").rsplit("|", 1)[-1]
            out[m.group(1)] = shas[-1] if "same file" not in cell else shas[0]
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    # Build from a copy of the tree so that build/ and *.egg-info never land in the repo.
    shutil.copytree(ROOT / "faceunlock", src / "faceunlock",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    for f in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE", "_faceunlock_entry.py"):
        if (ROOT / f).is_file():
            shutil.copy2(ROOT / f, src / f)
    if not (src / "README.md").exists():
        (src / "README.md").write_text("faceunlock\n")
    out = tmp / "dist"
    # An isolated build (pip fetches setuptools>=68 and wheel, as pyproject.toml asks;
    # cached after the first run).
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    wheels = list(out.glob("faceunlock-*.whl"))
    assert len(wheels) == 1
    return wheels[0]


MODELS_DIR = ROOT / "faceunlock" / "models"
# Licence files the shipped weights need in the wheel (Apache-2.0 text for MobileFaceNet and
# MediaPipe, MIT text for the MobileFaceNet TFLite conversion, the NOTICE naming them).
REQUIRED_LICENCE_FILES = ("NOTICE", "LICENSE-Apache-2.0.txt", "LICENSE-MIT-syaringan357.txt")


def test_wheel_ships_only_free_weights(wheel):
    shipped = _shipped_sha256()
    # MODELS.md lists exactly the models in the source tree (at least the four of 0.2.0).
    assert set(shipped) == {p.name for p in MODELS_DIR.glob("*.tflite")}, shipped
    assert {"face_detection_short_range.tflite", "face_landmark.tflite", "dlib_resnet_v1_fp16.tflite",
            "mobilefacenet_v1.tflite"} <= set(shipped)
    seen_tflite = set()
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            name = info.filename
            low = name.lower()
            assert not low.endswith(".onnx"), name
            assert not any(bad in low for bad in FORBIDDEN_NAMES), name
            if low.endswith(".tflite"):
                base = name.rsplit("/", 1)[-1]
                assert base in shipped, f"unlisted model in the wheel: {name}"
                assert hashlib.sha256(z.read(name)).hexdigest() == shipped[base], name
                seen_tflite.add(base)
            if info.file_size > MAX_BYTES:
                assert name == DLIB_FILE, f"{name}: {info.file_size} bytes"
            if low.endswith((".py", ".md", ".json", ".txt")):
                text = z.read(name)
                assert b"\x00" not in text, name
    assert seen_tflite == set(shipped)


def test_wheel_ships_licences(wheel):
    """Every model licence text in faceunlock/models (and at least the required ones) is in
    the wheel, byte for byte, and the NOTICE names each licence file and each model it covers."""
    licence_files = {p.name for p in MODELS_DIR.iterdir() if p.name == "NOTICE" or p.name.startswith("LICENSE")}
    assert set(REQUIRED_LICENCE_FILES) <= licence_files
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for f in sorted(licence_files):
            member = f"faceunlock/models/{f}"
            assert member in names, f"{member} missing from the wheel"
            assert z.read(member) == (MODELS_DIR / f).read_bytes(), member
        notice = z.read("faceunlock/models/NOTICE").decode()
    apache = (MODELS_DIR / "LICENSE-Apache-2.0.txt").read_text()
    assert "Apache License" in apache and "Version 2.0" in apache and "END OF TERMS AND CONDITIONS" in apache
    assert "Permission is hereby granted" in (MODELS_DIR / "LICENSE-MIT-syaringan357.txt").read_text()
    for f in licence_files - {"NOTICE"}:
        assert f in notice, f"NOTICE does not mention {f}"
    assert "mobilefacenet_v1.tflite" in notice and "sirius-ai" in notice


def test_wheel_console_script_entry(wheel):
    """The `faceunlock` script starts in the top-level _faceunlock_entry module (Ctrl-C is
    handled before the package is imported), which the wheel must therefore ship."""
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert "_faceunlock_entry.py" in names
        eps = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "faceunlock = _faceunlock_entry:main" in z.read(eps).decode()
