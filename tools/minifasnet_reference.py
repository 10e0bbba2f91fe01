"""Make tests/data/minifasnet_reference.npz: MiniFASNet crops and PyTorch logits on public frames.

Run with torch installed (the package itself never needs it), next to the dev share::

    /tmp/fasvenv/bin/pip install torch==2.13.0 cryptography opencv-python-headless ai-edge-litert
    /tmp/fasvenv/bin/python tools/minifasnet_reference.py [--src ../shared/models/minifasnet]

Frames: the bundled public-domain images ``faceunlock/data/{astronaut,grace_hopper,
frame_640x480}.jpg`` and their mirror images (so no dev data ships). The face box of each
frame is faceunlock's own BlazeFace box (``FaceEngine.detect``); the 80×80 crops are cut by
upstream's ``CropImage.crop`` from ``reference/generate_patches.py`` in the dev share (run, not
copied: it is the reference for faceunlock's own crop code), with upstream's integer box
``[int(x0), int(y0), int(x1-x0+1), int(y1-y0+1)]``. The logits come from upstream's torch
network class (``reference/MiniFASNet.py``, loaded with the state dict exactly as upstream's
``AntiSpoofPredict`` does) and are checked against this project's functional torch
reference (``tools/convert_minifasnet.torch_logits``).

Stored arrays: ``names`` (N,), ``boxes`` (N, 4) float64 xyxy pixels, ``frames_sha256`` (N,)
sha256 of each RGB frame's bytes, ``crops_2.7`` / ``crops_4.0`` (N, 80, 80, 3) uint8 BGR,
``logits_MiniFASNetV2`` / ``logits_MiniFASNetV1SE`` (N, 3) float32, ``source_sha256`` (2,),
``torch_version``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import convert_minifasnet as cm  # noqa: E402

OUT = REPO / "tests" / "data" / "minifasnet_reference.npz"
IMAGES = ("astronaut", "grace_hopper", "frame_640x480")


def _load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def frames() -> list[tuple[str, np.ndarray]]:
    import faceunlock as fu

    out = []
    for name in IMAGES:
        img = fu.load_image(REPO / "faceunlock" / "data" / f"{name}.jpg")
        out.append((name, img))
        out.append((name + "_mirrored", np.ascontiguousarray(img[:, ::-1])))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=cm.DEFAULT_SRC, help="folder with the .pth files and reference/")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)

    import torch

    import faceunlock as fu

    ref = args.src / "reference"
    upstream_net = _load_module(ref / "MiniFASNet.py", "upstream_minifasnet")
    upstream_crop = _load_module(ref / "generate_patches.py", "upstream_generate_patches").CropImage()

    engine = fu.FaceEngine(threads=1)
    names, boxes, shas = [], [], []
    crops: dict[float, list[np.ndarray]] = {s.scale: [] for s in cm.SOURCES}
    for name, rgb in frames():
        faces = engine.detect(rgb)
        if not faces:
            raise SystemExit(f"no face in {name}")
        box = tuple(float(v) for v in faces[0].box)
        x0, y0, x1, y1 = box
        bbox = [int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1)]
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        for s in cm.SOURCES:
            crops[s.scale].append(upstream_crop.crop(bgr, bbox, s.scale, cm.SIZE, cm.SIZE, True))
        names.append(name)
        boxes.append(box)
        shas.append(hashlib.sha256(rgb.tobytes()).hexdigest())

    data: dict[str, np.ndarray] = {
        "names": np.array(names),
        "boxes": np.array(boxes, np.float64),
        "frames_sha256": np.array(shas),
        "source_sha256": np.array([s.sha256 for s in cm.SOURCES]),
        "torch_version": np.array(torch.__version__),
    }
    for s in cm.SOURCES:
        path = args.src / s.pth
        digest = cm.sha256_bytes(path.read_bytes())
        if digest != s.sha256:
            raise SystemExit(f"{path}: sha256 {digest}, expected {s.sha256}")
        x = np.stack(crops[s.scale]).astype(np.float32)
        net = getattr(upstream_net, s.arch)(conv6_kernel=(5, 5))  # upstream get_kernel(80, 80)
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
        net.load_state_dict({(k[7:] if k.startswith("module.") else k): v for k, v in raw.items()})
        net.eval()
        with torch.no_grad():
            logits = net(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
        own = cm.torch_logits(cm.load_state_dict(path), x)
        d = float(np.max(np.abs(own - logits)))
        print(f"{s.arch}: upstream torch module vs own functional torch reference: max |diff| {d:.3g}")
        if d > 1e-5:
            raise SystemExit("the functional reference disagrees with upstream's module")
        data[f"crops_{s.scale}"] = np.stack(crops[s.scale])
        data[f"logits_{s.arch}"] = logits.astype(np.float32)
        for n, lg in zip(names, logits):
            print(f"  {n:24s} logits {np.round(lg, 4)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **data)
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes, {len(names)} frames)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
