"""``faceunlock doctor``: is this installation able to unlock, and is it set up safely?

Checks, each reported as ok / warn / FAIL:

* versions: Python, faceunlock, numpy, OpenCV, cryptography, the TFLite runtime;
* models: every shipped model's sha256 against ``models/MODELS.md``, then one end-to-end
  template of a bundled frame (detector + face mesh + descriptor) with its latency;
* cameras: ``/dev/video*`` nodes (opened briefly) and whether Picamera2 is importable —
  no camera is a warning, not a failure (files and folders still work);
* store: the store file and its key file exist, are 0600 in 0700 directories, owned by
  the running user, and authenticate.

Exit status 0 unless something is broken (a model checksum differs, the runtime cannot
run a model, the store does not authenticate or cannot be read).
"""

from __future__ import annotations

import json
import os
import platform
import re
import stat
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Check", "run", "model_checks", "parse_models_md", "permission_checks"]

OK, WARN, FAIL = "ok", "warn", "FAIL"
_HEX64 = re.compile(r"\b[0-9a-f]{64}\b")


@dataclass
class Check:
    area: str
    name: str
    status: str
    detail: str


def parse_models_md(text: str) -> dict[str, str]:
    """{file name: expected sha256 of the shipped file} from MODELS.md's first table.

    A row names the file in backticks in its first cell; the shipped digest is the last
    64-hex value of the row (rows whose shipped file is "same file, unchanged" carry only
    the source digest, which is then the shipped one)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = re.fullmatch(r"`([^`]+\.tflite)`", cells[0]) if cells else None
        digests = _HEX64.findall(line)
        if m and digests and m.group(1) not in out:
            out[m.group(1)] = digests[-1]
    return out


def model_checks(models_dir: Path | None = None) -> list[Check]:
    from .runtime import _MODELS_DIR, sha256_file

    d = models_dir or _MODELS_DIR
    md = d / "MODELS.md"
    if not md.exists():
        return [Check("models", "MODELS.md", FAIL, f"{md} is missing")]
    expected = parse_models_md(md.read_text(encoding="utf-8"))
    checks = []
    for name, digest in sorted(expected.items()):
        f = d / name
        if not f.exists():
            checks.append(Check("models", name, WARN, "listed in MODELS.md but not installed (optional model?)"))
            continue
        got = sha256_file(f)
        if got == digest:
            checks.append(Check("models", name, OK, f"sha256 {got[:16]}… matches MODELS.md ({f.stat().st_size:,} bytes)"))
        else:
            checks.append(Check("models", name, FAIL, f"sha256 {got} differs from MODELS.md {digest}: "
                                "reinstall faceunlock"))
    for f in sorted(d.glob("*.tflite")):
        if f.name not in expected:
            checks.append(Check("models", f.name, WARN, "not listed in MODELS.md (no checksum to compare)"))
    return checks


def _version(mod: str) -> str:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:
        return "not installed"


def version_checks() -> list[Check]:
    from . import __version__
    from .errors import RuntimeMissingError

    out = [Check("versions", "python", OK, f"{platform.python_version()} ({platform.machine()}, {platform.system()})"),
           Check("versions", "faceunlock", OK, __version__)]
    import numpy
    import cv2
    import cryptography

    out += [Check("versions", "numpy", OK, numpy.__version__), Check("versions", "opencv", OK, cv2.__version__),
            Check("versions", "cryptography", OK, cryptography.__version__)]
    try:
        from .runtime import runtime_name

        name = runtime_name()
        out.append(Check("runtime", name, OK, f"version {_version(name)}"))
    except RuntimeMissingError as exc:
        out.append(Check("runtime", "tflite", FAIL, str(exc)))
    return out


def engine_check() -> list[Check]:
    from .engine import FaceEngine
    from .image import load_image

    frame = load_image(Path(__file__).resolve().parent / "data" / "frame_640x480.jpg")
    try:
        e = FaceEngine(threads=1)
        t0 = time.perf_counter()
        e.warm_up()
        load_ms = (time.perf_counter() - t0) * 1000
        e.template(frame)
        t0 = time.perf_counter()
        t = e.template(frame)
        ms = (time.perf_counter() - t0) * 1000
    except Exception as exc:
        return [Check("runtime", "end-to-end", FAIL, f"{type(exc).__name__}: {exc}")]
    return [Check("runtime", "end-to-end", OK, f"one 640x480 frame → {t.shape[0]}-D template in {ms:.1f} ms "
                  f"(1 thread; models loaded in {load_ms:.0f} ms; embedder {e.embedder_spec.name})")]


def camera_checks(open_cameras: bool = True) -> list[Check]:
    from . import camera

    out = []
    devs = camera.list_video_devices()
    if not devs:
        out.append(Check("camera", "v4l2", WARN, "no /dev/video* device (video files and image folders still work)"))
    elif open_cameras:
        for r in camera.probe_cameras():
            out.append(Check("camera", r["device"], OK if r["ok"] else WARN, r["detail"]))
    else:
        out.append(Check("camera", "v4l2", OK, ", ".join(devs) + " (not opened)"))
    try:
        import importlib

        importlib.import_module("picamera2")
        out.append(Check("camera", "picamera2", OK, "importable"))
    except Exception:
        out.append(Check("camera", "picamera2", OK, "not installed (only needed for the Raspberry Pi camera)"))
    return out


def _mode_check(area: str, what: str, path: Path, want: int) -> Check:
    st = os.stat(path)
    mode = stat.S_IMODE(st.st_mode)
    owner_ok = st.st_uid == os.geteuid()
    if mode & ~want & 0o777 or not owner_ok:
        detail = f"{path} is {mode:04o}"
        if not owner_ok:
            detail += f", owned by uid {st.st_uid} (you are {os.geteuid()})"
        return Check(area, what, WARN, detail + f"; expected {want:04o}, owned by you: chmod {want:o} {path}")
    return Check(area, what, OK, f"{path} {mode:04o}")


def permission_checks(store_path: Path, key_path: Path | None) -> list[Check]:
    """Mode and owner of the store file, the key file and their directories."""
    out = []
    for what, p, want in (("store file", store_path, 0o600), ("store dir", store_path.parent, 0o700)):
        if p.exists():
            out.append(_mode_check("store", what, p, want))
    if key_path is not None:
        for what, p, want in (("key file", key_path, 0o600), ("key dir", key_path.parent, 0o700)):
            if p.exists():
                out.append(_mode_check("store", what, p, want))
    return out


def store_checks(store_arg: str | None, key_arg: str | None) -> list[Check]:
    from .errors import FaceUnlockError
    from .store import TemplateStore, default_key_path, default_store_path

    store_path = Path(store_arg).expanduser() if store_arg else default_store_path()
    key_path = Path(key_arg).expanduser() if key_arg else default_key_path(store_path)
    if not store_path.exists():
        return [Check("store", "store file", OK, f"{store_path} does not exist yet (nobody enrolled); "
                      f"key file would be {key_path}")]
    out = permission_checks(store_path, key_path)
    if not key_path.exists():
        out.append(Check("store", "key file", FAIL, f"{key_path} is missing: the store cannot be opened"))
        return out
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # reported above, with a fix
            n = TemplateStore(store_path, key_file=key_path, create=False).verify()
        out.append(Check("store", "authenticate", OK, f"{store_path}: {n} user(s), every record decrypts"))
    except FaceUnlockError as exc:
        out.append(Check("store", "authenticate", FAIL, str(exc)))
    except OSError as exc:
        out.append(Check("store", "authenticate", FAIL, f"cannot read {store_path}: {exc.strerror}"))
    return out


def run(args) -> int:
    checks: list[Check] = []
    checks += version_checks()
    checks += model_checks()
    if not any(c.status == FAIL for c in checks):
        checks += engine_check()
    checks += camera_checks(open_cameras=not getattr(args, "no_camera", False))
    checks += store_checks(getattr(args, "store", None), getattr(args, "key_file", None))
    broken = [c for c in checks if c.status == FAIL]
    if getattr(args, "json", False):
        print(json.dumps({"ok": not broken, "checks": [asdict(c) for c in checks]}, indent=1))
    else:
        for c in checks:
            print(f"{c.status:>4}  {c.area:<8} {c.name:<32} {c.detail}")
        print(f"\n{len(checks)} checks: {len(broken)} failed, "
              f"{sum(c.status == WARN for c in checks)} warnings" + (" — fix the FAIL lines above" if broken else ""))
    sys.stdout.flush()
    return 1 if broken else 0
