"""One enrolment and one unlock on bundled frames; prints a JSON line of numbers.

Run by ``tools/aarch64_smoke.sh`` twice: natively (the reference) and inside an emulated
Debian bookworm arm64 root filesystem. Kept to a few model calls on purpose: under
qemu-user one descriptor call takes seconds. With ``--compare REF.json`` it checks this
run's numbers against the reference and exits 1 when they differ by more than ``--tol``.

Frames: three views (rotation, scale) of the bundled astronaut portrait (public domain);
two enrol, one unlocks. Liveness is off: still frames of a photo are all there is. Both
shipped embedders run; each has its own template tolerance (:data:`TEMPLATE_TOL`), the
score tolerance is the same for both.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def view(image: np.ndarray, angle_deg: float, scale: float) -> np.ndarray:
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle_deg, scale)
    return cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT)


# Max abs template difference allowed between x86-64 and emulated aarch64, per embedder,
# about twice what was measured: dlib-resnet-v1 8.3e-05 and 1.28e-04 (0.1.0 runs);
# mobilefacenet-v1 5.02e-04 (first 0.2.0 CI run; its scores differed by 8e-06).
TEMPLATE_TOL = {"dlib-resnet-v1": 2e-4, "mobilefacenet-v1": 1e-3}
SCORE_TOL = 2e-4


def run(embedder: str) -> dict:
    t_import = time.perf_counter()
    import faceunlock as fu
    from faceunlock.runtime import runtime_name
    from faceunlock.store import TemplateStore

    import_s = time.perf_counter() - t_import
    portrait = fu.load_image(Path(fu.__file__).parent / "data" / "astronaut.jpg")
    enrol_frames = [view(portrait, 0, 1.0), view(portrait, -6, 0.95)]
    probe = view(portrait, 8, 0.9)
    with tempfile.TemporaryDirectory() as d:
        store = TemplateStore(Path(d) / "smoke.fus", key_file=Path(d) / "smoke.key")
        policy = fu.Policy(enroll_min_templates=2, enroll_max_templates=2, max_frames=1, timeout_s=600.0)
        engine = fu.FaceEngine(threads=1, embedder=embedder)
        t0 = time.perf_counter()
        engine.warm_up()
        load_s = time.perf_counter() - t0
        unlocker = fu.FaceUnlock(store, engine=engine, liveness=False, policy=policy)
        t0 = time.perf_counter()
        report = unlocker.enroll("astronaut", enrol_frames)
        enrol_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = unlocker.unlock("astronaut", [probe])
        unlock_s = time.perf_counter() - t0
        templates = store.get("astronaut").templates
    return {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cv2": cv2.__version__,
        "runtime": runtime_name(),
        "embedder": engine.embedder_spec.name,
        "templates": int(report.templates),
        "template0_head": [round(float(v), 6) for v in templates[0][:8]],
        "templates_flat": [float(v) for v in templates.ravel()],
        "granted": bool(result.granted),
        "reason": result.reason.value,
        "score": None if result.score is None else round(float(result.score), 6),
        "seconds": {"import": round(import_s, 2), "load_models": round(load_s, 2),
                    "enrol_2_frames": round(enrol_s, 2), "unlock_1_frame": round(unlock_s, 2)},
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, help="write the full results here as JSON")
    ap.add_argument("--compare", type=Path, help="reference JSON from another machine")
    args = ap.parse_args()
    results = [run(name) for name in TEMPLATE_TOL]
    if args.out:
        args.out.write_text(json.dumps(results))
    ok = True
    refs = {r["embedder"]: r for r in json.loads(args.compare.read_text())} if args.compare else {}
    for r in results:
        print(json.dumps({k: v for k, v in r.items() if k != "templates_flat"}))
        ok = ok and r["granted"] and r["templates"] == 2
        if args.compare:
            ref = refs.get(r["embedder"])
            if ref is None:
                print(f"no reference for {r['embedder']}")
                ok = False
                continue
            a, b = np.array(r["templates_flat"]), np.array(ref["templates_flat"])
            diff = float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")
            sdiff = abs((r["score"] or 0) - (ref["score"] or 0))
            tol = TEMPLATE_TOL[r["embedder"]]
            print(f"{r['embedder']}: compare with {ref['machine']}: max |template diff| = {diff:.2e} "
                  f"(tolerance {tol:g}), |score diff| = {sdiff:.2e} (tolerance {SCORE_TOL:g})")
            ok = ok and diff <= tol and sdiff <= SCORE_TOL
    print("aarch64 smoke: " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
