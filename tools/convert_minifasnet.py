"""Convert the two MiniFASNet anti-spoofing models (PyTorch state dicts, Apache-2.0) to TFLite.

Conversion only, on a developer machine; the faceunlock package never imports torch or
TensorFlow::

    python -m venv /tmp/fasvenv && /tmp/fasvenv/bin/pip install torch==2.13.0 tensorflow-cpu==2.21.0
    /tmp/fasvenv/bin/python tools/convert_minifasnet.py [--src DIR] [--out-dir faceunlock/models] [--fp16]

``--src`` is the folder holding ``2.7_80x80_MiniFASNetV2.pth`` and
``4_0_0_80x80_MiniFASNetV1SE.pth`` (Silent-Face-Anti-Spoofing @ b6d5f04,
``resources/anti_spoof_models/``); default ``../shared/models/minifasnet`` next to the
repository. Each file's sha256 is checked before anything else.

Model contract (``faceunlock/liveness/texture.py`` relies on it exactly):

* one input, float32, shape (1, 80, 80, 3), **NHWC** (upstream's torch model is NCHW):
  an 80×80 crop in **BGR** channel order, pixel values 0..255 as they are (not divided,
  no mean subtracted);
* one output, float32, shape (1, 3): the raw logits (softmax is left to the caller);
  class 1 = real face, classes 0 and 2 = attack types.

How the network is rebuilt (facts from upstream's ``MiniFASNet.py``, shapes from the state
dict, so a pruned variant with other channel counts converts the same way):

* "conv block" = convolution without bias, batch norm, per-channel PReLU; "linear block"
  = the same without PReLU. A convolution whose weight has one input channel per group and
  whose input has as many channels as it has outputs is depthwise. 3×3 convolutions are
  zero-padded by one pixel on every side (torch's symmetric padding: for stride 2 this is
  an explicit PAD then a VALID convolution, since TensorFlow's "SAME" would pad only
  bottom/right); 1×1 and the final 5×5 depthwise are not padded.
* stem: ``conv1`` (3×3, stride 2), ``conv2_dw`` (depthwise 3×3).
* a "depth-wise unit" = 1×1 conv block, depthwise 3×3 conv block, 1×1 linear block;
  ``conv_23``, ``conv_34``, ``conv_45`` are such units with stride 2 and no shortcut;
  ``conv_3``, ``conv_4``, ``conv_5`` are chains of them (stride 1) with an identity
  shortcut each (``x + unit(x)``). In the SE variant the last unit of each chain has a
  squeeze-excitation module on its output before the shortcut: global average pool,
  1×1 conv + BN + ReLU, 1×1 conv + BN + sigmoid, channel-wise product.
* head: ``conv_6_sep`` (1×1 conv block to 512), ``conv_6_dw`` (5×5 depthwise linear
  block, no padding: 5×5 → 1×1), flatten, ``linear`` 512 → 128 without bias, 1-D batch
  norm, dropout (identity at inference), ``prob`` 128 → 3 without bias.
* every batch norm (eps 1e-5, running statistics) is folded into the convolution or
  linear layer before it, in float64.

The PyTorch reference used for the parity checks (:func:`torch_logits`) is a separate
functional implementation on the unfolded state dict (``torch.nn.functional`` with real
batch norms), so a folding or layout mistake in the TensorFlow graph shows up as a
difference.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SRC = REPO.parent / "shared" / "models" / "minifasnet"
DEFAULT_OUT_DIR = REPO / "faceunlock" / "models"
UPSTREAM_COMMIT = "b6d5f04ad78778917853b25c778acef6d5626d15"
BN_EPS = 1e-5
SIZE = 80


@dataclass(frozen=True)
class Source:
    pth: str
    sha256: str
    scale: float  # crop scale about the face box
    arch: str  # "MiniFASNetV2" or "MiniFASNetV1SE"
    out_fp32: str
    out_fp16: str


SOURCES = (
    Source("2.7_80x80_MiniFASNetV2.pth",
           "a5eb02e1843f19b5386b953cc4c9f011c3f985d0ee2bb9819eea9a142099bec0",
           2.7, "MiniFASNetV2", "minifasnet_v2_2.7_80.tflite", "minifasnet_v2_2.7_80_fp16.tflite"),
    Source("4_0_0_80x80_MiniFASNetV1SE.pth",
           "84ee1d37d96894d5e82de5a57df044ef80a58be2b218b5ed7cdfd875ec2f5990",
           4.0, "MiniFASNetV1SE", "minifasnet_v1se_4.0_80.tflite", "minifasnet_v1se_4.0_80_fp16.tflite"),
)


class FormatError(ValueError):
    """The state dict is not laid out as this converter expects."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------
# State dict
# ----------------------------------------------------------------------------------------


def load_state_dict(path: Path) -> dict[str, np.ndarray]:
    """The .pth state dict as float32 numpy arrays, ``module.`` prefixes removed.

    Loaded with ``weights_only=True`` (no pickled code runs). ``num_batches_tracked``
    counters are dropped."""
    import torch

    raw = torch.load(str(path), map_location="cpu", weights_only=True)
    out: dict[str, np.ndarray] = {}
    for key, value in raw.items():
        name = key[len("module."):] if key.startswith("module.") else key
        if name.endswith("num_batches_tracked"):
            continue
        out[name] = value.detach().cpu().numpy().astype(np.float32)
    return out


# A layer in the plan: the state-dict prefix of a conv/linear block, its stride, padding and
# whether a PReLU follows. Units and chains group them; the plan is derived from the keys.
STEM = (("conv1", 2), ("conv2_dw", 1))
STAGES = (("conv_23", "unit", 2), ("conv_3", "chain", 1), ("conv_34", "unit", 2), ("conv_4", "chain", 1),
          ("conv_45", "unit", 2), ("conv_5", "chain", 1))


def chain_length(sd: dict[str, np.ndarray], prefix: str) -> int:
    idx = {int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"\.model\.(\d+)\.", k))}
    if not idx or idx != set(range(len(idx))):
        raise FormatError(f"{prefix}: unit indices {sorted(idx)}")
    return len(idx)


def describe(sd: dict[str, np.ndarray]) -> str:
    parts = []
    for name, kind, stride in STAGES:
        if kind == "chain":
            n = chain_length(sd, name)
            se = sum(1 for i in range(n) if f"{name}.model.{i}.se_module.fc1.weight" in sd)
            parts.append(f"{name}: {n} units" + (f" ({se} with SE)" if se else ""))
    n_params = sum(v.size for k, v in sd.items() if not k.endswith(("running_mean", "running_var")))
    return f"{', '.join(parts)}; {n_params:,} parameters"


# ----------------------------------------------------------------------------------------
# PyTorch reference (functional, unfolded batch norms)
# ----------------------------------------------------------------------------------------


def torch_logits(sd: dict[str, np.ndarray], bgr_nhwc: np.ndarray) -> np.ndarray:
    """Logits (N, 3) of the network on float32 BGR 0..255 crops (N, 80, 80, 3), computed
    with torch on the unfolded state dict (NCHW inside, as upstream)."""
    import torch
    import torch.nn.functional as F

    t = {k: torch.from_numpy(v) for k, v in sd.items()}

    def bn(x, p):
        return F.batch_norm(x, t[p + ".running_mean"], t[p + ".running_var"], t[p + ".weight"],
                            t[p + ".bias"], training=False, eps=BN_EPS)

    def block(x, p, stride=1, prelu=True):
        w = t[p + ".conv.weight"]
        k = w.shape[-1]
        groups = x.shape[1] if (w.shape[1] == 1 and x.shape[1] == w.shape[0] and x.shape[1] > 1) else 1
        pad = (k - 1) // 2 if k == 3 else 0
        x = F.conv2d(x, w, None, stride, pad, 1, groups)
        x = bn(x, p + ".bn")
        return F.prelu(x, t[p + ".prelu.weight"]) if prelu else x

    def unit(x, p, stride, shortcut):
        y = block(x, p + ".conv")
        y = block(y, p + ".conv_dw", stride)
        y = block(y, p + ".project", prelu=False)
        if shortcut and p + ".se_module.fc1.weight" in t:
            s = y.mean(dim=(2, 3), keepdim=True)
            s = F.relu(bn(F.conv2d(s, t[p + ".se_module.fc1.weight"]), p + ".se_module.bn1"))
            s = torch.sigmoid(bn(F.conv2d(s, t[p + ".se_module.fc2.weight"]), p + ".se_module.bn2"))
            y = y * s
        return x + y if shortcut else y

    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(bgr_nhwc, np.float32).transpose(0, 3, 1, 2)))
        for name, stride in STEM:
            x = block(x, name, stride)
        for name, kind, stride in STAGES:
            if kind == "unit":
                x = unit(x, name, stride, shortcut=False)
            else:
                for i in range(chain_length(sd, name)):
                    x = unit(x, f"{name}.model.{i}", 1, shortcut=True)
        x = block(x, "conv_6_sep")
        x = block(x, "conv_6_dw", prelu=False)
        x = x.flatten(1)
        x = F.linear(x, t["linear.weight"])
        x = F.batch_norm(x, t["bn.running_mean"], t["bn.running_var"], t["bn.weight"], t["bn.bias"],
                         training=False, eps=BN_EPS)
        x = F.linear(x, t["prob.weight"])
    return x.numpy().astype(np.float32)


# ----------------------------------------------------------------------------------------
# Folded plan and TensorFlow graph
# ----------------------------------------------------------------------------------------


def _bn_scale_shift(sd, p) -> tuple[np.ndarray, np.ndarray]:
    gamma = sd[p + ".weight"].astype(np.float64)
    beta = sd[p + ".bias"].astype(np.float64)
    mean = sd[p + ".running_mean"].astype(np.float64)
    var = sd[p + ".running_var"].astype(np.float64)
    s = gamma / np.sqrt(var + BN_EPS)
    return s, beta - mean * s


def build_plan(sd: dict[str, np.ndarray]) -> list[tuple]:
    """A flat list of NHWC steps with every batch norm folded in.

    Steps: ("conv", kernel HWIO, bias, stride, pad, alpha|None), ("dwconv", kernel HW C 1,
    bias, stride, pad, alpha|None), ("save",), ("se", w1, b1, w2, b2), ("add",),
    ("head", w_emb, b_emb, w_prob)."""
    plan: list[tuple] = []
    channels = 3

    def block(p, stride=1, prelu=True):
        nonlocal channels
        w = sd[p + ".conv.weight"].astype(np.float64)  # (O, I/groups, kh, kw)
        o, i_per_group, kh, kw = w.shape
        if kh != kw:
            raise FormatError(f"{p}: non-square kernel {w.shape}")
        depthwise = i_per_group == 1 and channels == o and channels > 1
        if not depthwise and i_per_group != channels:
            raise FormatError(f"{p}: weight {w.shape} does not fit {channels} input channels")
        s, shift = _bn_scale_shift(sd, p + ".bn")
        w = w * s[:, None, None, None]
        pad = 1 if kh == 3 else 0
        alpha = sd[p + ".prelu.weight"].astype(np.float32) if prelu else None
        if alpha is not None and alpha.shape != (o,):
            raise FormatError(f"{p}: PReLU weight {alpha.shape} for {o} channels")
        if depthwise:
            kernel = np.transpose(w, (2, 3, 0, 1))  # (kh, kw, C, 1)
            plan.append(("dwconv", kernel.astype(np.float32), shift.astype(np.float32), stride, pad, alpha))
        else:
            kernel = np.transpose(w, (2, 3, 1, 0))  # HWIO
            plan.append(("conv", kernel.astype(np.float32), shift.astype(np.float32), stride, pad, alpha))
        channels = o

    def unit(p, stride, shortcut):
        if shortcut:
            plan.append(("save",))
        block(p + ".conv")
        block(p + ".conv_dw", stride)
        block(p + ".project", prelu=False)
        if shortcut and p + ".se_module.fc1.weight" in sd:
            w1 = sd[p + ".se_module.fc1.weight"].astype(np.float64)[:, :, 0, 0]  # (C/r, C)
            s1, b1 = _bn_scale_shift(sd, p + ".se_module.bn1")
            w2 = sd[p + ".se_module.fc2.weight"].astype(np.float64)[:, :, 0, 0]  # (C, C/r)
            s2, b2 = _bn_scale_shift(sd, p + ".se_module.bn2")
            plan.append(("se", (w1 * s1[:, None]).T.astype(np.float32), b1.astype(np.float32),
                         (w2 * s2[:, None]).T.astype(np.float32), b2.astype(np.float32)))
        if shortcut:
            plan.append(("add",))

    for name, stride in STEM:
        block(name, stride)
    for name, kind, stride in STAGES:
        if kind == "unit":
            unit(name, stride, shortcut=False)
        else:
            for i in range(chain_length(sd, name)):
                unit(f"{name}.model.{i}", 1, shortcut=True)
    block("conv_6_sep")
    block("conv_6_dw", prelu=False)
    w_lin = sd["linear.weight"].astype(np.float64)  # (128, 512)
    s, shift = _bn_scale_shift(sd, "bn")
    w_prob = sd["prob.weight"].astype(np.float64)  # (3, 128)
    if w_lin.shape[1] != channels or w_prob.shape[1] != w_lin.shape[0]:
        raise FormatError(f"head shapes {w_lin.shape} {w_prob.shape} after {channels} channels")
    plan.append(("head", (w_lin * s[:, None]).T.astype(np.float32), shift.astype(np.float32),
                 w_prob.T.astype(np.float32)))
    return plan


def build_tf_function(plan: list[tuple]):
    import tensorflow as tf

    def prelu(x, alpha):
        # max(x, 0) + alpha * min(x, 0), per channel
        return tf.nn.relu(x) + tf.constant(-alpha) * tf.nn.relu(-x)

    def pad1(x):
        return tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])

    @tf.function(input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32, name="bgr")])
    def logits(bgr):
        x = bgr
        saved = []
        for step in plan:
            op = step[0]
            if op in ("conv", "dwconv"):
                _, kernel, bias, stride, pad, alpha = step
                if pad:
                    x = pad1(x)
                if op == "conv":
                    x = tf.nn.conv2d(x, tf.constant(kernel), strides=[1, stride, stride, 1], padding="VALID")
                else:
                    x = tf.nn.depthwise_conv2d(x, tf.constant(kernel), strides=[1, stride, stride, 1],
                                               padding="VALID")
                x = tf.nn.bias_add(x, tf.constant(bias))
                if alpha is not None:
                    x = prelu(x, alpha)
            elif op == "save":
                saved.append(x)
            elif op == "se":
                _, w1, b1, w2, b2 = step
                s = tf.reduce_mean(x, axis=[1, 2])  # (1, C)
                s = tf.nn.relu(tf.matmul(s, tf.constant(w1)) + tf.constant(b1))
                s = tf.sigmoid(tf.matmul(s, tf.constant(w2)) + tf.constant(b2))
                x = x * tf.reshape(s, [1, 1, 1, -1])
            elif op == "add":
                x = saved.pop() + x
            elif op == "head":
                _, w_emb, b_emb, w_prob = step
                x = tf.reshape(x, [1, -1])
                x = tf.matmul(x, tf.constant(w_emb)) + tf.constant(b_emb)
                x = tf.matmul(x, tf.constant(w_prob))
            else:
                raise ValueError(op)
        if saved:
            raise FormatError("unbalanced shortcut")
        return tf.identity(x, name="logits")

    return logits


def convert_to_tflite(fn, fp16: bool) -> bytes:
    import tensorflow as tf

    concrete = fn.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex ops
    if fp16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def tflite_logits(tflite_bytes: bytes, bgr_nhwc: np.ndarray) -> np.ndarray:
    """Run the converted model on each crop (N, 80, 80, 3) on one thread."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    interp = Interpreter(model_content=tflite_bytes, num_threads=1)
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    (out,) = interp.get_output_details()
    if tuple(inp["shape"]) != (1, SIZE, SIZE, 3) or inp["dtype"] != np.float32:
        raise SystemExit(f"bad input {inp['shape']} {inp['dtype']}")
    if tuple(out["shape"]) != (1, 3) or out["dtype"] != np.float32:
        raise SystemExit(f"bad output {out['shape']} {out['dtype']}")
    res = []
    for crop in np.asarray(bgr_nhwc, np.float32):
        interp.set_tensor(inp["index"], crop[None])
        interp.invoke()
        res.append(interp.get_tensor(out["index"])[0].copy())
    return np.stack(res)


def check_inputs() -> np.ndarray:
    """Crops for the conversion self-check: the bundled public-domain images resized whole
    to 80×80 (BGR) and their mirror images, plus uniform noise. The parity test uses real
    face crops (tests/data/minifasnet_reference.npz)."""
    import cv2

    crops = []
    for p in sorted((REPO / "faceunlock" / "data").glob("*.jpg")):
        img = cv2.imread(str(p))
        if img is None:
            continue
        c = cv2.resize(img, (SIZE, SIZE))
        crops += [c, c[:, ::-1]]
    rng = np.random.default_rng(0)
    crops += list(rng.integers(0, 256, (2, SIZE, SIZE, 3)))
    return np.stack(crops).astype(np.float32)


def op_counts(tflite_bytes: bytes) -> str:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    interp = Interpreter(model_content=tflite_bytes)
    counts: dict[str, int] = {}
    for op in interp._get_ops_details():  # noqa: SLF001 (diagnostics only)
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return ", ".join(f"{k} ×{v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC, help="folder with the two .pth files")
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    ap.add_argument("--fp16", action="store_true", help="float16 weights (default: float32, which keeps parity)")
    ap.add_argument("--tolerance", type=float, default=1e-4,
                    help="largest allowed |TFLite - torch| logit difference on the check crops")
    args = ap.parse_args(argv)

    x = check_inputs()
    status = 0
    for src in SOURCES:
        path = args.src / src.pth
        data = path.read_bytes()
        digest = sha256_bytes(data)
        print(f"source: {path} ({len(data):,} bytes) sha256 {digest}")
        if digest != src.sha256:
            print(f"sha256 mismatch: expected {src.sha256}", file=sys.stderr)
            return 1
        sd = load_state_dict(path)
        print(f"  {src.arch}: {describe(sd)}")
        plan = build_plan(sd)
        tflite = convert_to_tflite(build_tf_function(plan), fp16=args.fp16)
        want = torch_logits(sd, x)
        got = tflite_logits(tflite, x)
        diff = float(np.max(np.abs(got - want)))
        print(f"  ops: {op_counts(tflite)}")
        print(f"  max |TFLite - torch| logit difference on {len(x)} check crops: {diff:.3g} "
              f"(logits span {want.min():.2f}..{want.max():.2f})")
        if not diff <= args.tolerance:
            print(f"  parity {diff:.3g} exceeds {args.tolerance}: not written", file=sys.stderr)
            status = 1
            continue
        out = args.out_dir / (src.out_fp16 if args.fp16 else src.out_fp32)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(tflite)
        print(f"  wrote {out} ({len(tflite):,} bytes, {'float16' if args.fp16 else 'float32'} weights) "
              f"sha256 {sha256_bytes(tflite)}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
