"""Per-frame evaluation of the MiniFASNet texture check (:mod:`faceunlock.liveness.texture`).

Reads the development sets next to the repository (``../shared/data``; nothing here ships
data) and scores every sampled frame's largest face with :class:`TextureCheck`, on the box of
faceunlock's detector as it is (``raw``) and with the box mapped towards upstream's RetinaFace
box (``corrected``: width / 0.98, height / 0.93, centre moved up by 5 % of the new height;
the ratios measured between the two detectors, see ``../shared/models/minifasnet/README.md``).

Material (``Sample.source`` / ``Sample.label``):

===================  =======================================================  ============
source               frames                                                   label
===================  =======================================================  ============
``videos2``          faces-dev2/videos: 31 real-person clips                  live
``videos1``          faces-dev/video_liveness d18–d20: 3 real-person clips    live
``attack_videos``    faces-dev2/attacks videos: live counterparts (P03, P04,  live / replay
                     P05 (a downloaded news clip), P07) and the 3 recorded
                     replays (P03, P04, P05)
``tight_crops``      faces-dev2/attacks ``stills``: face crops with little    live / replay
                     context cut from live and replay recordings (P07–P21;    / replay?
                     ``replay?`` = labelled fake, type not verifiable)
``nuaa``             NUAA 203×203 face crops: live vs hand-held print          live / print
``generator``        :mod:`faceunlock.evaluation.attacks` clips (15 frames) from  print / bent_print
                     the portraits of :func:`generator_portraits`               / screen
``silentface``       upstream's own sample stills (T1 live; F1 print, F2      live / print
                     tablet screen), EXIF orientation applied                 / screen
===================  =======================================================  ============

Tight crops and NUAA crops are outside what the models were trained on (no context around
the face): both their live and attack frames are expected to score "fake"; they are reported
separately and never used to choose a threshold.

**Split by person** (:func:`deal_halves`), the same rule and groups as ``faceunlock
eval-liveness`` (:mod:`faceunlock.evaluation.liveness_eval`), so that what is tuned here never
sees that evaluation's reporting half: within each group — the faces-dev clips d18–d20, each
head-motion class of faces-dev2's clips, the attack recordings' pair ids (live and replay of one
person together), the face-crop pair ids, the NUAA subjects, the three Silent-Face stills, the
generator's source portraits — the person keys are sorted by name and dealt alternately to
``tuning`` and ``reporting``, starting with ``tuning``. The two MEAD M030 clips are one person.

Frames of videos are sampled at ``fps`` (default 5) and at most ``max_frames`` per clip,
evenly spread. Scores are cached (``cache``) by item and settings.

Run: ``python -m faceunlock.evaluation.texture_eval [--shared ../shared/data] [--cache DIR]``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import sys
import time
import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import ImageError
from ..image import load_image
from ..liveness.texture import TextureCheck, retinaface_box
from . import attacks as A
from .groups import HALVES, default_shared_root
from .metrics import clopper_pearson_upper

__all__ = ["Item", "Sample", "corrected_box", "items", "deal_halves", "person_of_video", "generator_portraits",
           "split_of", "score_items", "quantile_table",
           "choose_threshold", "item_medians", "report", "main"]

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
# Which labels count as bona fide / attack when the per-frame threshold is chosen: full camera
# frames only (tight crops and NUAA are reported, never tuned on).
TUNE_LIVE = ("videos2", "videos1", "attack_videos")
TUNE_ATTACK = ("attack_videos", "generator")


@dataclass(frozen=True)
class Item:
    """One video, still or generated clip to score.

    ``path`` is a file, or for generated clips ``generator:<kind>:<image path>``."""

    source: str
    label: str  # live | replay | replay? | print | bent_print | screen
    person: str
    half: str  # tuning | reporting | n/a
    path: str
    rotate: int = 0  # quarter turns clockwise to make the still upright


@dataclass
class Sample:
    """The scores of one frame's largest face (``raw``: detector box; ``corrected``: see
    :func:`corrected_box`). ``faces`` = faces found; 0 means not scored (scores are NaN)."""

    source: str
    label: str
    person: str
    half: str
    item: str
    frame: int
    faces: int
    raw: float
    corrected: float
    probs: list[list[float]] = field(default_factory=list)  # raw box: per model, 3 classes


def corrected_box(box) -> tuple[float, float, float, float]:
    """:func:`faceunlock.liveness.texture.retinaface_box`."""
    return retinaface_box(box)


# ----------------------------------------------------------------------------------------
# What to score
# ----------------------------------------------------------------------------------------

def person_of_video(stem: str) -> str:
    """The person of a faces-dev2 clip: the two MEAD M030 clips show one person (videos.csv
    notes); every other clip is its own person."""
    return "MEAD_M030" if "M030" in stem else stem


def deal_halves(groups: dict[str, list[str]]) -> dict[str, str]:
    """{person key: "tuning" | "reporting"}: within each group the keys are sorted by name and
    dealt alternately, starting with "tuning" (the rule of ``faceunlock eval-liveness``, so
    that the per-frame tuning never sees its reporting half)."""
    out = {}
    for keys in groups.values():
        for i, k in enumerate(sorted(set(keys))):
            out[k] = HALVES[i % 2]
    return out


def split_of(item: Item) -> str:
    """The half an item was dealt to (``item.half``)."""
    return item.half


def generator_portraits(shared: Path, lfw: int = 12) -> list[tuple[str, Path]]:
    """(name, image) of the portraits the generator attacks are made from, as
    ``faceunlock eval-liveness`` picks them: the bundled astronaut and grace_hopper,
    Silent-Face's live still T1, and the first image of every k-th faces-dev LFW person
    (``lfw`` of them)."""
    data = Path(__file__).resolve().parents[1] / "data"
    out = [("astronaut", data / "astronaut.jpg"), ("grace_hopper", data / "grace_hopper.jpg")]
    dev = shared / "faces-dev"
    t1 = dev / "video_liveness" / "silent_face_antispoofing_samples" / "image_T1.jpg"
    if t1.is_file():
        out.append(("live_still_T1", t1))
    lfw_root = dev / "lfw_dev" / "images"
    if lfw > 0 and lfw_root.is_dir():
        people = sorted(p for p in lfw_root.iterdir() if p.is_dir())
        step = max(1, len(people) // lfw)
        for p in people[::step][:lfw]:
            img = sorted(p.glob("*.jpg"))[0]
            out.append((f"lfw/{img.stem}", img))
    return out


def items(shared: Path, *, lfw: int = 12, kinds: tuple[str, ...] = ("print", "bent_print", "screen")
          ) -> list[Item]:
    """Everything to score, with person key and split half. Missing folders are skipped."""
    entries: list[tuple[str, Item]] = []  # (split group, item with half unset)
    d2 = shared / "faces-dev2"
    dev = shared / "faces-dev" / "video_liveness"
    for p in sorted((dev / "liveportrait_driving").glob("*.mp4")):
        entries.append(("faces-dev", Item("videos1", "live", f"fd:{p.stem}", "", str(p))))
    csv_path = d2 / "videos" / "videos.csv"
    if csv_path.is_file():
        with open(csv_path, newline="") as fh:
            for r in csv.DictReader(fh):
                p = d2 / r["file"]
                motion = r["head_motion"].split(" ")[0]
                entries.append((f"videos-{motion}", Item("videos2", "live", f"v:{person_of_video(p.stem)}", "", str(p))))
    acsv = d2 / "attacks" / "attacks.csv"
    if acsv.is_file():
        with open(acsv, newline="") as fh:
            for r in csv.DictReader(fh):
                pid, path = r["pair_id"], str(d2 / r["file"])
                if r["media"] == "video":
                    entries.append(("attack-pairs", Item("attack_videos", r["kind"], f"a:{pid}", "", path)))
                elif pid.startswith("NUAA"):
                    entries.append(("nuaa", Item("nuaa", r["kind"], f"s:{pid}", "", path)))
                else:
                    entries.append(("crops", Item("tight_crops", r["kind"], f"s:{pid}", "", path)))
    sf = dev / "silent_face_antispoofing_samples"
    for name, label in (("image_T1.jpg", "live"), ("image_F1.jpg", "print"), ("image_F2.jpg", "screen")):
        if (sf / name).is_file():
            # load_image applies the files' EXIF orientation (upright 480x640, as upstream's cv2.imread)
            entries.append(("silent-face", Item("silentface", label, f"sf:{Path(name).stem}", "", str(sf / name))))
    for name, img in generator_portraits(shared, lfw):
        for k in kinds:
            entries.append(("generator", Item("generator", k, f"g:{name}", "", f"generator:{k}:{img}")))
    groups: dict[str, list[str]] = {}
    for g, it in entries:
        groups.setdefault(g, []).append(it.person)
    halves = deal_halves(groups)
    return [dataclasses.replace(it, half=halves[it.person]) for _, it in entries]


# ----------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------


def _video_frames(path: str, fps: float, max_frames: int) -> list[tuple[int, np.ndarray]]:
    cap = cv2.VideoCapture(path)
    src_fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    step = max(1, round(src_fps / fps))
    want = list(range(0, n if n > 0 else 10**6, step))
    if n > 0 and len(want) > max_frames:
        want = [want[round(i * (len(want) - 1) / (max_frames - 1))] for i in range(max_frames)]
    want_set = set(want)
    out, i = [], 0
    while len(out) < len(want):
        ok = cap.grab()
        if not ok:
            break
        if i in want_set:
            ok, f = cap.retrieve()
            if ok:
                out.append((i, np.ascontiguousarray(f[:, :, ::-1])))
        i += 1
    cap.release()
    return out


def _frames_of(item: Item, fps: float, max_frames: int, n_generated: int) -> list[tuple[int, np.ndarray]]:
    if item.path.startswith("generator:"):
        _, kind, img_path = item.path.split(":", 2)
        img = load_image(img_path)
        seed = int(hashlib.sha256(item.path.encode()).hexdigest()[:8], 16)
        rng = np.random.default_rng(seed)
        if kind == "screen":
            clip = A.screen_attack(img, rng, n_frames=n_generated)
        else:
            clip = A.print_attack(img, rng, n_frames=n_generated, bent=(kind == "bent_print"))
        return list(enumerate(clip))
    if item.path.lower().endswith((".mp4", ".mov", ".webm", ".avi", ".mkv")):
        return _video_frames(item.path, fps, max_frames)
    img = load_image(item.path)
    if item.rotate:
        img = np.ascontiguousarray(np.rot90(img, -item.rotate))
    return [(0, img)]


def _detect(engine, frame: np.ndarray, pad_tight: bool) -> list[tuple[float, float, float, float]]:
    """Boxes of the faces in ``frame``, largest first."""
    faces = engine.detect(frame)
    if faces or not pad_tight:
        return [f.box for f in faces]
    # tight crops: give the detector some context (replicated border, 30 % of the side),
    # then map the box back into the crop's coordinates
    h, w = frame.shape[:2]
    p = round(0.3 * max(h, w))
    padded = cv2.copyMakeBorder(frame, p, p, p, p, cv2.BORDER_REPLICATE)
    return [(f.box[0] - p, f.box[1] - p, f.box[2] - p, f.box[3] - p) for f in engine.detect(padded)]


def score_items(its: list[Item], *, fps: float = 5.0, max_frames: int = 100, n_generated: int = 15,
                cache: Path | None = None, say=lambda s: None) -> list[Sample]:
    """Score every item's frames (cached per item in ``cache`` when given)."""
    import faceunlock as fu

    engine = fu.FaceEngine(threads=1)
    tc = TextureCheck(threads=1, correct_box=False)  # both boxes are made here
    samples: list[Sample] = []
    t0 = time.perf_counter()
    for k, it in enumerate(its):
        # keyed by what is scored, not by person or half (re-splitting reuses the scores)
        key = hashlib.sha256(json.dumps([it.source, it.label, it.path, it.rotate, fps, max_frames,
                                         n_generated]).encode()).hexdigest()[:20]
        cf = cache / f"{key}.json" if cache else None
        if cf and cf.is_file():
            samples += [dataclasses.replace(Sample(**s), person=it.person, half=it.half)
                        for s in json.loads(cf.read_text())]
            continue
        got = []
        try:
            frames = _frames_of(it, fps, max_frames, n_generated)
        except ImageError as exc:  # e.g. a 1-byte placeholder file in the share
            say(f"skipped unreadable {it.path}: {exc}")
            frames = []
        for idx, frame in frames:
            boxes = _detect(engine, frame, pad_tight=it.source in ("tight_crops", "nuaa"))
            if not boxes:
                got.append(Sample(it.source, it.label, it.person, it.half, it.path, idx, 0, math.nan, math.nan))
                continue
            box = boxes[0]
            probs = tc.scores(frame, box)
            raw = float(np.mean([p[1] for p in probs.values()]))
            cor = tc.score(frame, corrected_box(box))
            got.append(Sample(it.source, it.label, it.person, it.half, it.path, idx, len(boxes), raw, cor,
                              [[float(v) for v in p] for p in probs.values()]))
        if cf:
            cf.parent.mkdir(parents=True, exist_ok=True)
            cf.write_text(json.dumps([asdict(s) for s in got]))
        samples += got
        say(f"[{k + 1}/{len(its)} {time.perf_counter() - t0:.0f}s] {it.source} {it.label} {Path(it.path).name}: "
            f"{len(got)} frames, median raw {np.nanmedian([s.raw for s in got]) if got else math.nan:.3f}")
    return samples


# ----------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------


def _scores(samples: list[Sample], box: str) -> np.ndarray:
    return np.array([getattr(s, box) for s in samples if s.faces > 0], np.float64)


def quantile_table(samples: list[Sample], box: str = "raw", threshold: float | None = None) -> str:
    """Per source, label and half: frames scored (and without a face), persons, items, score
    quantiles; with ``threshold``, the frames on the wrong side of it (live below, attack at
    or above) with a 95 % Clopper-Pearson upper bound, and the items (clips/stills) whose
    median is on the wrong side."""
    groups: dict[tuple[str, str, str], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.source, s.label, s.half), []).append(s)
    qh = " ".join(f"{'q' + str(round(q * 100)):>5s}" for q in QUANTILES)
    head = f"{'source':14s} {'label':10s} {'half':9s} {'frames':>6s} {'noface':>6s} {'pers':>4s} {'items':>5s} {qh}"
    if threshold is not None:
        head += f"  {'wrong side (frames)':>26s} {'items':>7s}"
    lines = [head]
    for (src, lab, half), ss in sorted(groups.items()):
        sc = _scores(ss, box)
        q = " ".join(f"{v:5.3f}" for v in np.quantile(sc, QUANTILES)) if sc.size else "  (none)"
        line = (f"{src:14s} {lab:10s} {half:9s} {sc.size:6d} {sum(1 for s in ss if s.faces == 0):6d} "
                f"{len({s.person for s in ss}):4d} {len({s.item for s in ss}):5d} {q}")
        if threshold is not None and sc.size:
            live = lab == "live"
            wrong = int(np.sum(sc < threshold) if live else np.sum(sc >= threshold))
            by_item: dict[str, list[float]] = {}
            for s in ss:
                if s.faces > 0:
                    by_item.setdefault(s.item, []).append(getattr(s, box))
            meds = [np.median(v) for v in by_item.values()]
            wi = sum(1 for m in meds if (m < threshold if live else m >= threshold))
            line += (f"  {wrong:4d}/{sc.size:<5d} {100 * wrong / sc.size:5.1f}% ≤{100 * clopper_pearson_upper(wrong, sc.size):5.1f}%"
                     f" {wi:3d}/{len(meds):<3d}")
        lines.append(line)
    return "\n".join(lines)


def choose_threshold(samples: list[Sample], box: str = "raw", half: str = "tuning") -> dict:
    """The per-frame threshold from one half: bona fide = live full-frame video frames
    (``TUNE_LIVE``), attacks = recorded replay and generator frames (``TUNE_ATTACK``). Returns the
    equal-error threshold (the midpoint of the gap when the two sets are separated) and, for
    reference, the thresholds that reject 1 % / 5 % of the live frames."""
    live = _scores([s for s in samples if s.half == half and s.source in TUNE_LIVE and s.label == "live"], box)
    att = _scores([s for s in samples if s.half == half and s.source in TUNE_ATTACK and s.label != "live"], box)
    if not live.size or not att.size:
        return {"threshold": math.nan, "live": int(live.size), "attack": int(att.size)}
    cand = np.unique(np.concatenate([live, att, [0.0, 1.0]]))
    best, best_t = (2.0, 0.0), 0.5
    for t in cand:
        frr, far = float(np.mean(live < t)), float(np.mean(att >= t))
        key = (max(frr, far), -min(frr, far))
        if key < best:
            best, best_t = key, float(t)
    gap = live.min() > att.max()
    if gap:
        best_t = float((live.min() + att.max()) / 2)
    return {
        "threshold": best_t,
        "separated": bool(gap),
        "eer": best[0],
        "live_frames": int(live.size),
        "attack_frames": int(att.size),
        "live_min": float(live.min()),
        "attack_max": float(att.max()),
        "t_live_reject_1pct": float(np.quantile(live, 0.01)),
        "t_live_reject_5pct": float(np.quantile(live, 0.05)),
        "attack_accept_at_t1": float(np.mean(att >= np.quantile(live, 0.01))),
        "attack_accept_at_t5": float(np.mean(att >= np.quantile(live, 0.05))),
    }


def item_medians(samples: list[Sample], box: str = "corrected") -> list[tuple[str, str, str, str, int, float, float]]:
    """(source, label, half, item, frames, median, min-or-max) per item: the minimum for live
    items, the maximum for attacks (the frame nearest to the wrong side)."""
    by: dict[tuple[str, str, str, str], list[float]] = {}
    for s in samples:
        if s.faces > 0:
            by.setdefault((s.source, s.label, s.half, s.item), []).append(getattr(s, box))
    out = []
    for (src, lab, half, item), v in sorted(by.items()):
        a = np.array(v)
        out.append((src, lab, half, item, a.size, float(np.median(a)), float(a.min() if lab == "live" else a.max())))
    return out


def report(samples: list[Sample]) -> str:
    """Both boxes' tables with the threshold chosen on the tuning half, then the full-frame
    items whose median is on the wrong side of the default (corrected) box's threshold."""
    out = []
    choice = {b: choose_threshold(samples, b) for b in ("raw", "corrected")}
    for b in ("raw", "corrected"):
        c = choice[b]
        tag = " (TextureCheck's default)" if b == "corrected" else ""
        out.append(f"== box {b}{tag}: threshold chosen on the tuning half: "
                   + json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in c.items()}))
        out.append(quantile_table(samples, b, c["threshold"]))
        out.append("")
    t = choice["corrected"]["threshold"]
    out.append(f"== full-frame items (box corrected) whose median is on the wrong side of {t:.4f}, "
               "and live items with any frame below it")
    for src, lab, half, item, n, med, edge in item_medians(samples, "corrected"):
        if src not in ("videos1", "videos2", "attack_videos", "generator", "silentface"):
            continue
        live = lab == "live"
        if (live and edge < t) or (not live and med >= t):
            out.append(f"  {src:13s} {lab:10s} {half:9s} {Path(item).name[:60]:60s} frames {n:3d} "
                       f"median {med:.3f} {'min' if live else 'max'} {edge:.3f}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Per-frame MiniFASNet texture scores on the dev data")
    ap.add_argument("--shared", type=Path, default=default_shared_root(), help="the shared data folder")
    ap.add_argument("--cache", type=Path, default=None, help="cache folder for per-item scores")
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--max-frames", type=int, default=100)
    ap.add_argument("--lfw", type=int, default=12, help="LFW portraits for the generator attacks")
    ap.add_argument("--json", type=Path, default=None, help="write every sample here")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    its = items(args.shared, lfw=args.lfw)
    if not its:
        print(f"no dev data under {args.shared}", file=sys.stderr)
        return 2
    say = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    samples = score_items(its, fps=args.fps, max_frames=args.max_frames, cache=args.cache, say=say)
    if args.json:
        args.json.write_text(json.dumps([asdict(s) for s in samples]))
    print(report(samples))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
