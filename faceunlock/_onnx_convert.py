"""ONNX face embedder → TFLite, run as a script by ``faceunlock models import``.

    python _onnx_convert.py --onnx MODEL.onnx --out DIR --chips CHIPS.npy --mean 127.5 --scale 127.5

Standalone on purpose (it never imports faceunlock): it runs in whichever Python has the
conversion tools (``pip install 'faceunlock[import]'``: onnx2tf, TensorFlow, onnx,
onnxruntime), possibly a separate venv given with ``--python``. Steps:

1. fix the batch dimension of the ONNX input to 1 (onnx2tf fails on a symbolic batch
   in BatchNormalization) and re-run ONNX shape inference;
2. put a small sample-image file (made from ``CHIPS``) where onnx2tf looks for its
   test data, so that it never tries to download its own;
3. ``onnx2tf.convert`` → float32 (and float16) TFLite, NHWC input;
4. run the ONNX original with onnxruntime on every chip of ``CHIPS`` ((N, S, S, 3) uint8
   RGB aligned faces, normalised as ``(x − mean) / scale``) and save the outputs, so the
   caller can compare them with the TFLite model on its own runtime.

Writes into ``--out``: ``model_float32.tflite``, ``model_float16.tflite``,
``onnx_outputs.npy`` and ``report.json`` (tool versions, input/output shapes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _versions() -> dict:
    out = {"python": sys.version.split()[0]}
    from importlib import metadata

    for pkg in ("onnx2tf", "tensorflow", "tensorflow-cpu", "onnx", "onnxruntime", "numpy", "tf-keras", "onnxsim"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--onnx", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--chips", required=True, type=Path)
    ap.add_argument("--mean", type=float, default=127.5)
    ap.add_argument("--scale", type=float, default=127.5)
    a = ap.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import onnx
    import onnxruntime as ort

    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)

    model = onnx.load(str(a.onnx))
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        print(f"expected one image input, found {len(inputs)}", file=sys.stderr)
        return 3
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if len(shape) != 4 or shape[1] != 3 or shape[2] is None or shape[2] != shape[3]:
        print(f"expected an NCHW RGB input (N, 3, S, S), found {shape}", file=sys.stderr)
        return 3
    size = int(shape[2])
    for v in list(model.graph.input[:1]) + list(model.graph.output):
        d = v.type.tensor_type.shape.dim[0]
        d.ClearField("dim_param")
        d.dim_value = 1
    del model.graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model)
    static = work / "static.onnx"
    onnx.save(model, str(static))

    chips = np.load(a.chips)
    if chips.ndim != 4 or chips.shape[1:] != (size, size, 3):
        print(f"chips must be (N, {size}, {size}, 3), got {chips.shape}", file=sys.stderr)
        return 3
    # onnx2tf validates its conversion on 20 images of 128×128×3 in [0, 1] read from the
    # working directory (downloaded when missing): give it ours.
    sample = np.stack([chips[i % len(chips)] for i in range(20)]).astype(np.float32) / 255.0
    idx = (np.arange(128) * size / 128).astype(int)
    sample = sample[:, idx][:, :, idx]
    np.save(work / "calibration_image_sample_data_20x128x128x3_float32.npy", sample)

    import onnx2tf

    cwd = os.getcwd()
    os.chdir(work)
    try:
        onnx2tf.convert(input_onnx_file_path=str(static), output_folder_path=str(work / "tf"), non_verbose=True)
    finally:
        os.chdir(cwd)
    for kind in ("float32", "float16"):
        src = work / "tf" / f"static_{kind}.tflite"
        if not src.is_file():
            print(f"onnx2tf wrote no {src.name}", file=sys.stderr)
            return 4
        src.replace(out / f"model_{kind}.tflite")

    sess = ort.InferenceSession(str(a.onnx), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = ((chips.astype(np.float32) - np.float32(a.mean)) / np.float32(a.scale)).transpose(0, 3, 1, 2)
    outs = np.concatenate([sess.run(None, {name: x[i : i + 1]})[0].reshape(1, -1) for i in range(len(x))])
    np.save(out / "onnx_outputs.npy", outs.astype(np.float32))
    report = {"input_size": size, "dim": int(outs.shape[1]), "onnx_input": name, "versions": _versions()}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
