"""``faceunlock calibrate``: similarity thresholds from all pairs of labelled images.

Every image gets one template (largest face); every unordered pair of images is scored:
same identity → genuine, different → impostor. For each target false-accept rate the
threshold is the smallest one whose observed FAR is at or below the target, reported with
the genuine pairs it rejects (FRR) and a 95 % Clopper–Pearson upper bound on the FAR.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FaceUnlockError
from .dataset import LabelledImage, scan
from .metrics import clopper_pearson_upper, threshold_for_far, upper95

__all__ = ["TemplateSet", "compute_templates", "all_pair_scores", "calibrate", "CalibrationRow"]


@dataclass
class TemplateSet:
    identities: list[str]
    paths: list[Path]
    templates: np.ndarray  # (N, D) unit rows
    failures: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def compute_templates(engine, images: list[LabelledImage], pad: float = 0.0) -> TemplateSet:
    """Templates of the largest face of each image; images without a face are listed
    in ``failures``. ``pad`` adds a replicated border (fraction of the image size) first,
    for tight face crops such as ORL's."""
    import cv2

    from ..image import load_image

    t0 = time.perf_counter()
    ids, paths, temps, fails = [], [], [], []
    for item in images:
        img = load_image(item.path)
        if pad:
            p = int(max(img.shape[:2]) * pad)
            img = cv2.copyMakeBorder(img, p, p, p, p, cv2.BORDER_REPLICATE)
        try:
            t = engine.template(img)
        except FaceUnlockError:
            fails.append(item.path)
            continue
        ids.append(item.identity)
        paths.append(item.path)
        temps.append(t)
    arr = np.array(temps, np.float32) if temps else np.zeros((0, 0), np.float32)
    return TemplateSet(ids, paths, arr, fails, time.perf_counter() - t0)


def all_pair_scores(ts: TemplateSet) -> tuple[np.ndarray, np.ndarray]:
    """(genuine scores, impostor scores) over all unordered pairs."""
    sims = ts.templates @ ts.templates.T
    ids = np.array(ts.identities)
    iu = np.triu_indices(len(ids), k=1)
    same = ids[iu[0]] == ids[iu[1]]
    s = sims[iu]
    return s[same].astype(np.float64), s[~same].astype(np.float64)


@dataclass
class CalibrationRow:
    target_far: float
    threshold: float
    false_accepts: int
    impostor_pairs: int
    far_upper95: float
    frr: float
    false_rejects: int
    genuine_pairs: int

    def line(self) -> str:
        return (
            f"| 1/{round(1 / self.target_far):,} | {self.threshold:.4f} | {self.false_accepts} / {self.impostor_pairs:,} "
            f"(95 % upper bound {self.far_upper95:.1e}) | {self.frr * 100:.1f} % ({self.false_rejects} / {self.genuine_pairs:,}) |"
        )


def calibrate(genuine: np.ndarray, impostor: np.ndarray, targets=(1e-3, 2e-5)) -> list[CalibrationRow]:
    rows = []
    for far in targets:
        t = threshold_for_far(impostor, far)
        fa = int((impostor >= t).sum())
        fr = int((genuine < t).sum())
        rows.append(
            CalibrationRow(far, t, fa, int(impostor.size), clopper_pearson_upper(fa, int(impostor.size)),
                           fr / max(genuine.size, 1), fr, int(genuine.size))
        )
    return rows


def run(engine, roots: list[Path], exclude: tuple[str, ...] = (), pad: float = 0.0):
    images = scan(roots, exclude)
    ts = compute_templates(engine, images, pad)
    g, i = all_pair_scores(ts)
    return ts, g, i, calibrate(g, i)


# =========================================================================== by group
# ``faceunlock calibrate --by-group``: per-group false-accept rates on the dev data split by
# person into tuning and reporting halves (faceunlock.evaluation.groups), thresholds chosen on
# the tuning half by the worst-served group.

import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

from .groups import HALVES, DevImage  # noqa: E402

LANDMARK_CODE = ("detect.py",)  # a change to it invalidates cached landmarks


def _padded(img: np.ndarray, pad: float) -> np.ndarray:
    import cv2

    if not pad:
        return img
    p = int(max(img.shape[:2]) * pad)
    return cv2.copyMakeBorder(img, p, p, p, p, cv2.BORDER_REPLICATE)


def _key(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def landmarks_key(images: list[DevImage], refine: bool = True) -> str:
    """Cache key of the landmarks of ``images``: files, pads, and the detector code."""
    pkg = Path(__file__).resolve().parents[1]
    code = [hashlib.sha256((pkg / f).read_bytes()).hexdigest() for f in LANDMARK_CODE]
    return _key([(str(im.path), im.pad) for im in images], refine, code)


def face_landmarks(images: list[DevImage], engine, cache_dir: str | Path | None = None) -> np.ndarray:
    """(N, 468, 3) float32 face-mesh landmarks of the largest face of each (padded) image, in
    pixels of the padded image; NaN rows where no face was found. Cached in ``cache_dir``."""
    from ..image import load_image

    key = landmarks_key(images, engine.refine_landmarks)
    cache = Path(cache_dir) / f"landmarks-{key}.npy" if cache_dir else None
    if cache is not None and cache.is_file():
        return np.load(cache)
    out = np.full((len(images), 468, 3), np.nan, np.float32)
    for k, im in enumerate(images):
        img = _padded(load_image(im.path), im.pad)
        try:
            faces = engine.detect(img)
        except FaceUnlockError:
            continue
        if faces:
            out[k] = faces[0].landmarks[:, :3] if faces[0].landmarks.shape[1] >= 3 else np.pad(
                faces[0].landmarks, ((0, 0), (0, 1)))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, out)
    return out


def embed_images(
    images: list[DevImage], landmarks: np.ndarray, spec, *, five=None, flip: bool | None = None,
    cache_dir: str | Path | None = None, threads: int = 1,
) -> np.ndarray:
    """(N, D) float32 unit templates (NaN rows where ``landmarks`` is NaN) made with the
    embedder ``spec``, its alignment (``five`` overrides its five-point map) and
    ``flip`` (default: the spec's ``flip_average``). Cached in ``cache_dir``."""
    from dataclasses import replace as _replace

    from ..align import INSIGHTFACE_MAPS, aligned_chip
    from ..embed import Embedder
    from ..image import load_image

    if flip is not None:
        spec = _replace(spec, flip_average=flip)
    if five is None and spec.landmarks_map:
        five = INSIGHTFACE_MAPS[spec.landmarks_map]
    key = _key([(str(im.path), im.pad) for im in images],
               hashlib.sha256(np.ascontiguousarray(landmarks).tobytes()).hexdigest(),
               spec.name, spec.sha256 or spec.source_sha256, spec.alignment, spec.input_size, spec.pixel_mean,
               spec.pixel_scale, spec.flip_average, None if five is None else (five.name, five.indices))
    cache = Path(cache_dir) / f"templates-{spec.name}-{key}.npy" if cache_dir else None
    if cache is not None and cache.is_file():
        return np.load(cache)
    emb = Embedder(spec, threads=threads)
    out = np.full((len(images), spec.dim), np.nan, np.float32)
    for k, im in enumerate(images):
        if not np.all(np.isfinite(landmarks[k])):
            continue
        img = _padded(load_image(im.path), im.pad)
        out[k] = emb.embed(aligned_chip(img, landmarks[k], spec.alignment, spec.input_size, five))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, out)
    return out


@dataclass
class Block:
    """Scores of one (group, half): genuine and impostor pairs, with the impostor pairs'
    image indices (into the image list) for exclusions."""

    group: str
    half: str
    genuine: np.ndarray
    impostor: np.ndarray
    impostor_pairs: np.ndarray  # (M, 2) int
    failures: int  # images without a template


def group_blocks(images: list[DevImage], templates: np.ndarray, *, by_source: bool = False) -> dict[tuple[str, str], Block]:
    """(group, half) → :class:`Block`. Pairs are formed within one source, one group and
    one half; images without a template (NaN) are left out and counted. ``by_source``:
    one block per source of a group too, keyed ``("<group> / <source>", half)``."""
    ok = np.all(np.isfinite(templates), axis=1)
    keys: dict[tuple[str, str, str], list[int]] = {}
    for k, im in enumerate(images):
        keys.setdefault((im.group, im.half, im.source), []).append(k)
    out: dict[tuple[str, str], Block] = {}
    for (group, half, source), idx in keys.items():
        if by_source:
            group = f"{group} / {source}"
        idx = np.array(idx)
        fails = int((~ok[idx]).sum())
        idx = idx[ok[idx]]
        t = templates[idx].astype(np.float64)
        sims = t @ t.T
        persons = np.array([images[i].person for i in idx])
        a, b = np.triu_indices(len(idx), k=1)
        same = persons[a] == persons[b]
        s = sims[a, b]
        blk = out.get((group, half))
        new = Block(group, half, s[same], s[~same], np.stack([idx[a[~same]], idx[b[~same]]], 1), fails)
        if blk is None:
            out[(group, half)] = new
        else:
            out[(group, half)] = Block(group, half, np.concatenate([blk.genuine, new.genuine]),
                                       np.concatenate([blk.impostor, new.impostor]),
                                       np.concatenate([blk.impostor_pairs, new.impostor_pairs]),
                                       blk.failures + new.failures)
    return out


def exclude_pairs(block: Block, excluded: set[tuple[int, int]]) -> Block:
    """``block`` without the impostor pairs in ``excluded`` (unordered index pairs)."""
    if not excluded:
        return block
    keep = np.array([(min(a, b), max(a, b)) not in excluded for a, b in block.impostor_pairs], bool)
    return Block(block.group, block.half, block.genuine, block.impostor[keep], block.impostor_pairs[keep],
                 block.failures)


@dataclass
class GroupRow:
    group: str
    half: str
    threshold: float
    impostor_pairs: int
    false_accepts: int
    far_upper95: float
    genuine_pairs: int
    false_rejects: int
    raw_impostor_pairs: int  # before same-person exclusions
    raw_false_accepts: int

    @property
    def far(self) -> float:
        return self.false_accepts / self.impostor_pairs if self.impostor_pairs else float("nan")

    @property
    def frr(self) -> float:
        return self.false_rejects / self.genuine_pairs if self.genuine_pairs else float("nan")


def group_rows(raw: dict[tuple[str, str], Block], clean: dict[tuple[str, str], Block], threshold: float) -> list[GroupRow]:
    rows = []
    for key, blk in clean.items():
        fa = int((blk.impostor >= threshold).sum())
        fr = int((blk.genuine < threshold).sum())
        r = raw[key]
        rows.append(GroupRow(blk.group, blk.half, threshold, int(blk.impostor.size), fa, upper95(fa, int(blk.impostor.size)),
                             int(blk.genuine.size), fr, int(r.impostor.size), int((r.impostor >= threshold).sum())))
    return rows


def worst_group_threshold(blocks: dict[tuple[str, str], Block], target_far: float, half: str = "tuning") -> tuple[float, dict[str, float]]:
    """The smallest threshold at which the observed FAR is ≤ ``target_far`` in every group
    of ``half`` (the max over groups of each group's own :func:`threshold_for_far`), and
    each group's own threshold."""
    per = {b.group: threshold_for_far(b.impostor, target_far) for (g, h), b in blocks.items() if h == half and b.impostor.size}
    return max(per.values()), per


# --------------------------------------------------------------------- same-person pairs
# UTKFace has no person ids and holds many people (often celebrities) more than once, so
# some same-group "impostor" pairs are the same person. A pair is excluded as the same person
#   (a) automatically when BOTH shipped embedders accept it at their thresholds calibrated on
#       other, identity-labelled data (faces-dev, all pairs, 1/50,000): two different models
#       agreeing is strong evidence, but not proof: near the strong threshold such pairs were
#       looked at too, and one marked "different" in SAME_PERSON_FILE stays an impostor pair, or
#   (b) when a person looked at the two photos and marked them "same" in SAME_PERSON_FILE
#       (pairs one model scores high and the other does not).
# "unsure" changes neither default: a pair both models accept stays excluded, any other pair
# stays an impostor pair.
# The raw rate (no exclusion) is always reported beside the cleaned one as an upper bound.
AUTO_SAME_PERSON = {"mobilefacenet-v1": 0.5967, "dlib-resnet-v1": 0.9426}
SAME_PERSON_FILE = Path(__file__).resolve().parent / "utkface_same_person.csv"


def read_same_person_labels(path: Path = SAME_PERSON_FILE) -> dict[tuple[str, str], str]:
    """(file name a, file name b) sorted → verdict (``same`` / ``different`` / ``unsure``)."""
    import csv

    out: dict[tuple[str, str], str] = {}
    if not Path(path).is_file():
        return out
    for row in csv.DictReader(line for line in open(path, newline="") if not line.startswith("#")):
        a, b = sorted((row["file_a"].strip(), row["file_b"].strip()))
        out[(a, b)] = row["verdict"].strip()
    return out


def same_person_pairs(
    images: list[DevImage], templates: dict[str, np.ndarray], labels: dict[tuple[str, str], str] | None = None,
) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """(pairs excluded by the automatic rule and not labelled ``different``,
    further pairs excluded by a ``same`` label): unordered index pairs of UTKFace images in
    one group. ``templates`` maps embedder name → (N, D)
    templates and must hold every embedder of :data:`AUTO_SAME_PERSON`."""
    labels = read_same_person_labels() if labels is None else labels
    utk = [k for k, im in enumerate(images) if im.source == "utkface"]
    auto: set[tuple[int, int]] = set()
    by_group: dict[str, list[int]] = {}
    for k in utk:
        by_group.setdefault(images[k].group, []).append(k)
    for idx in by_group.values():
        idx_a = np.array(idx)
        ok = np.ones(len(idx_a), bool)
        for name in AUTO_SAME_PERSON:
            ok &= np.all(np.isfinite(templates[name][idx_a]), axis=1)
        idx_a = idx_a[ok]
        hit = np.ones((len(idx_a), len(idx_a)), bool)
        for name, thr in AUTO_SAME_PERSON.items():
            t = templates[name][idx_a].astype(np.float64)
            hit &= (t @ t.T) >= thr
        a, b = np.nonzero(np.triu(hit, 1))
        auto |= {(int(idx_a[i]), int(idx_a[j])) for i, j in zip(a, b)}
    name_to_idx = {images[k].path.name: k for k in utk}
    manual: set[tuple[int, int]] = set()
    vetoed: set[tuple[int, int]] = set()
    for (fa, fb), verdict in labels.items():
        if fa in name_to_idx and fb in name_to_idx:
            i, j = sorted((name_to_idx[fa], name_to_idx[fb]))
            if images[i].group == images[j].group:
                if verdict == "same":
                    manual.add((i, j))
                elif verdict == "different":
                    vetoed.add((i, j))
    return auto - vetoed, manual - auto


@dataclass
class ByGroupResult:
    embedder: str
    strong: float
    strong_per_group: dict[str, float]
    convenience: float
    convenience_per_group: dict[str, float]
    rows: dict[str, list[GroupRow]]  # threshold label → rows
    excluded_auto: int
    excluded_manual: int
    failures: int

    def text(self) -> str:
        worst = max(self.strong_per_group, key=self.strong_per_group.get)
        worst_c = max(self.convenience_per_group, key=self.convenience_per_group.get)
        out = [
            f"## {self.embedder}",
            f"same-person pairs excluded (UTKFace): {self.excluded_auto} by both embedders agreeing, "
            f"{self.excluded_manual} by inspection; images without a face: {self.failures}",
            "tuning-half threshold per group for FAR <= 1/50,000: "
            + ", ".join(f"{g} {t:.4f}" for g, t in self.strong_per_group.items())
            + f" -> strong {self.strong:.4f} (worst-served: {worst})",
            "tuning-half threshold per group for FAR <= 1/1,000: "
            + ", ".join(f"{g} {t:.4f}" for g, t in self.convenience_per_group.items())
            + f" -> convenience {self.convenience:.4f} (worst-served: {worst_c})",
        ]
        for label, rows in self.rows.items():
            out.append(f"\n### {self.embedder} at {label}")
            out.append("| group | half | impostor pairs | false accepts | FAR | 95 % upper | raw (no exclusion): FA / pairs, FAR | "
                       "genuine pairs | FRR |")
            out.append("|---|---|---|---|---|---|---|---|---|")
            for r in sorted(rows, key=lambda r: (HALVES.index(r.half), r.group)):
                raw_far = r.raw_false_accepts / r.raw_impostor_pairs if r.raw_impostor_pairs else float("nan")
                frr = f"{r.frr * 100:.1f} % ({r.false_rejects}/{r.genuine_pairs})" if r.genuine_pairs else "–"
                out.append(f"| {r.group} | {r.half} | {r.impostor_pairs:,} | {r.false_accepts} | {r.far:.1e} | "
                           f"{r.far_upper95:.1e} | {r.raw_false_accepts} / {r.raw_impostor_pairs:,}, {raw_far:.1e} | "
                           f"{r.genuine_pairs} | {frr} |")
        return "\n".join(out)

    def as_dict(self) -> dict:
        from dataclasses import asdict

        return {"embedder": self.embedder, "strong": self.strong, "strong_per_group": self.strong_per_group,
                "convenience": self.convenience, "convenience_per_group": self.convenience_per_group,
                "excluded_auto": self.excluded_auto, "excluded_manual": self.excluded_manual,
                "failures": self.failures,
                "rows": {k: [asdict(r) for r in v] for k, v in self.rows.items()}}


def round_up(t: float, decimals: int = 4) -> float:
    """``t`` rounded up to ``decimals`` places (a shipped threshold never accepts more)."""
    f = 10**decimals
    return math.ceil(t * f - 1e-9) / f


def by_group(
    specs: list, root: str | Path | None = None, cache_dir: str | Path | None = None, *, threads: int = 1,
    engine=None, labels: dict[tuple[str, str], str] | None = None,
) -> list[ByGroupResult]:
    """Per-group calibration of each embedder in ``specs`` (see the module notes above)."""
    from ..embed import SHIPPED_EMBEDDERS
    from ..engine import FaceEngine
    from .groups import load_dev_images

    images = load_dev_images(root)
    engine = engine or FaceEngine(threads=threads)
    lms = face_landmarks(images, engine, cache_dir)
    need = {s.name: s for s in specs}
    for name in AUTO_SAME_PERSON:
        need.setdefault(name, SHIPPED_EMBEDDERS[name])
    temps = {name: embed_images(images, lms, s, cache_dir=cache_dir, threads=threads) for name, s in need.items()}
    auto, manual = same_person_pairs(images, temps, labels)
    excluded = auto | manual
    n_auto = sum(images[i].half == images[j].half for i, j in auto)  # pairs that are ever scored
    n_manual = sum(images[i].half == images[j].half for i, j in manual)
    results = []
    for spec in specs:
        raw = group_blocks(images, temps[spec.name])
        clean = {k: exclude_pairs(b, excluded) for k, b in raw.items()}
        strong, per_s = worst_group_threshold(clean, 2e-5)
        conv, per_c = worst_group_threshold(clean, 1e-3)
        strong, conv = round_up(strong), round_up(conv)
        # groups with more than one source are also reported per source
        raw_src = group_blocks(images, temps[spec.name], by_source=True)
        multi = {g for g, _ in raw_src if sum(k[0].split(" / ")[0] == g.split(" / ")[0] for k in raw_src) > 2}
        raw_all = {**raw, **{k: b for k, b in raw_src.items() if k[0] in multi}}
        clean_all = {**clean, **{k: exclude_pairs(b, excluded) for k, b in raw_src.items() if k[0] in multi}}
        rows = {f"strong {strong:.4f} (chosen here)": group_rows(raw_all, clean_all, strong),
                f"convenience {conv:.4f} (chosen here)": group_rows(raw_all, clean_all, conv)}
        if spec.threshold is not None and round(spec.threshold, 4) != strong:
            rows[f"shipped strong {spec.threshold:.4f}"] = group_rows(raw_all, clean_all, spec.threshold)
        if spec.convenience_threshold is not None and round(spec.convenience_threshold, 4) != conv:
            rows[f"shipped convenience {spec.convenience_threshold:.4f}"] = group_rows(
                raw_all, clean_all, spec.convenience_threshold)
        fails = int((~np.all(np.isfinite(temps[spec.name]), axis=1)).sum())
        results.append(ByGroupResult(spec.name, strong, per_s, conv, per_c, rows, n_auto, n_manual, fails))
    return results
