"""Fit the face-mesh → dlib five-point map shipped as faceunlock/models/five_point_map.json.

For every face in the given image folders, dlib's CC0 5-point shape predictor (via
dlib-bin, a dev dependency) gives the reference points and faceunlock's face mesh gives
468 landmarks. Each of dlib's five points is then fitted, by ridge-regularised least
squares, as an affine combination (weights summing to 1) of the K mesh landmarks nearest
to it, in units of the inter-ocular distance. Only the indices and weights ship.

    pip install -e .[dev]
    python tools/fit_five_point_map.py ../shared/data/faces-dev/orl_att_faces \
        ../shared/data/faces-dev/faceapi_bbt --out faceunlock/models/five_point_map.json

The LFW dev images are left out on purpose: they are the pairs the map is judged on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faceunlock as fu  # noqa: E402
from faceunlock import align  # noqa: E402

EXTS = {".jpg", ".jpeg", ".png", ".pgm", ".bmp"}


def dlib_models():
    import dlib
    import face_recognition_models

    mdir = Path(face_recognition_models.__file__).parent / "models"
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(mdir / "shape_predictor_5_face_landmarks.dat"))


def pad(img: np.ndarray, frac: float) -> np.ndarray:
    h, w = img.shape[:2]
    p = int(max(h, w) * frac)
    import cv2

    return cv2.copyMakeBorder(img, p, p, p, p, cv2.BORDER_REPLICATE)


def collect(roots: list[Path], pad_frac: float) -> tuple[np.ndarray, np.ndarray]:
    det, sp = dlib_models()
    engine = fu.FaceEngine(threads=1)
    meshes, refs = [], []
    files = sorted(p for r in roots for p in r.rglob("*") if p.suffix.lower() in EXTS)
    for path in files:
        img = fu.load_image(path)
        if pad_frac:
            img = pad(img, pad_frac)
        faces = engine.detect(img)
        rects = det(img, 1)
        if len(faces) != 1 or len(rects) != 1:
            continue
        shape = sp(img, rects[0])
        q = np.array([(p.x, p.y) for p in shape.parts()], float)
        meshes.append(faces[0].landmarks[:, :2].astype(np.float64))
        refs.append(q)
    return np.array(meshes), np.array(refs)


def fit(meshes: np.ndarray, refs: np.ndarray, k: int, ridge: float) -> dict:
    # normalise every face: origin at the dlib eye midpoint, unit inter-ocular distance
    eyes_r = refs[:, [0, 1]].mean(1)
    eyes_l = refs[:, [2, 3]].mean(1)
    centre = (eyes_r + eyes_l) / 2
    iod = np.linalg.norm(eyes_r - eyes_l, axis=1)
    m = (meshes - centre[:, None]) / iod[:, None, None]
    q = (refs - centre[:, None]) / iod[:, None, None]
    mean_mesh = m.mean(0)
    points = []
    for j in range(5):
        target = q[:, j]
        idx = np.argsort(np.linalg.norm(mean_mesh - target.mean(0), axis=1))[:k]
        # rows: x and y of every face; unknown w (k,), constraint sum w = 1 via w = e1 + B z
        a = np.concatenate([m[:, idx, 0], m[:, idx, 1]])  # (2F, k)
        b = np.concatenate([target[:, 0], target[:, 1]])
        basis = np.vstack([-np.ones((1, k - 1)), np.eye(k - 1)])  # columns sum to 0
        w0 = np.zeros(k)
        w0[0] = 1.0
        a2 = a @ basis
        b2 = b - a @ w0
        z = np.linalg.solve(a2.T @ a2 + ridge * np.eye(k - 1), a2.T @ b2)
        w = w0 + basis @ z
        points.append({"indices": [int(i) for i in idx], "weights": [float(v) for v in w]})
    return {"name": f"fitted-k{k}", "points": points}


def error(mapping: align.FivePointMap, meshes: np.ndarray, refs: np.ndarray) -> float:
    iod = np.linalg.norm(refs[:, [0, 1]].mean(1) - refs[:, [2, 3]].mean(1), axis=1)
    errs = [np.linalg.norm(mapping.apply(mm) - r, axis=1).mean() / d for mm, r, d in zip(meshes, refs, iod)]
    return float(np.mean(errs))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fit the mesh → dlib five-point map")
    ap.add_argument("roots", nargs="+", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--ridge", type=float, default=1e-3)
    ap.add_argument("--pad", type=float, default=0.3, help="border added around each image, fraction of its size")
    args = ap.parse_args(argv)
    meshes, refs = collect(args.roots, args.pad)
    n = len(meshes)
    print(f"faces used: {n}")
    rng = np.random.default_rng(0)
    order = rng.permutation(n)
    train, test = order[: n * 4 // 5], order[n * 4 // 5 :]
    print(f"nearest-landmark map: mean error {error(align.FivePointMap.nearest(), meshes[test], refs[test]):.4f} IOD (held-out 20 %)")
    spec = fit(meshes[train], refs[train], args.k, args.ridge)
    fm = align.FivePointMap(tuple(tuple(p["indices"]) for p in spec["points"]), tuple(tuple(p["weights"]) for p in spec["points"]))
    print(f"fitted k={args.k} map: mean error {error(fm, meshes[test], refs[test]):.4f} IOD (held-out 20 %)")
    spec = fit(meshes, refs, args.k, args.ridge)
    spec["fitted_on"] = {"faces": n, "roots": [os.path.basename(str(r)) for r in args.roots], "k": args.k, "ridge": args.ridge}
    if args.out:
        args.out.write_text(json.dumps(spec, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
