"""Study (issue 11): does another way of combining the two MiniFASNet texture models separate
attacks from live faces better than the shipped mean of their P(real)?

Variants of the per-frame real score, from each face frame's four softmax vectors (2 models ×
the crop and its horizontally mirrored copy): A mean of the two P(real) (shipped); B mean over
crop and mirror (flip test-time augmentation); C min; D geometric mean; E min over models of
the flip-averaged P(real); F1 / F2 one model alone (V2 2.7×, V1SE 4.0×). Each variant is put in
place of the texture score and every window is judged as ``faceunlock eval-liveness`` judges it
(same frames, windows, person split and sequential rule: faceunlock.evaluation.liveness_eval
with the CI arguments — LFW dev 80 identities, faces-dev2, 20 CASIA subjects, seed 0).

Command (from the repository root; 15.5 min from scratch on 2 shared cores — 642 s for
decoding, detection and the models on 23 130 face frames, 284 s for the study — and ≈ 5 min
again with a warm --cache)::

    nice -n 5 python tools/study_texture_fusion.py --shared ../shared --cache /tmp/fu-cache/tfs --out /tmp/tfs.txt

Threshold rule (tuning half only): s_w = the highest threshold at which window w is accepted
without the hold (binary search; the no-hold verdict is monotone in the threshold).
L = lowest s_w of the tuning live windows, H = highest tuning attack s_w below L, threshold
(L + H) / 2. Hold band [thr, thr + w): A keeps the shipped width 0.09; other variants take the
width of the same tuning-frame quantiles that A's [0.46, 0.55) spans. Also printed: the shipped
A at 0.46 with its band [0.46, 0.55), and the "hold-aware" threshold (highest grid point,
step 0.002 up to L, keeping tuning live at 0 errors with the hold on).

Result (reproduced exactly; per-frame softmax identical to the first run's): no variant is
better. Shipped A at 0.46 with the hold: tuning live 0/49, print 0/52, bent 4/52, screen 1/52,
held still 3/52; reporting live 1/39, print 2/51, bent 1/51, screen 1/51, held still 1/51. At the
hold-aware thresholds (tuning live 0/49 with the hold) B (flip, 1.87× the texture cost) gives the
same reporting errors as A (2/1/1/1) and on tuning trades one print for one held-still print;
D ties A on both halves (7 and 5 attack errors), C and E are worse, F1/F2 alone much worse (replays 3–4/11 on tuning).
The rule threshold, chosen without the hold, costs 1–2/49 tuning live windows with the hold on
for every variant. The greyscale-attack part of the original study is not included here.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator

import numpy as np

# ---------------------------------------------------------------------------- pure functions
# p: (2 models [V2 2.7×, V1SE 4.0×], 2 views [crop, mirrored crop], 3 classes) softmax; class 1 = real.
REAL = 1


def score_a(p: np.ndarray) -> float:
    """A (shipped): mean over the two models of P(real) on the plain crop."""
    return float((p[0, 0, REAL] + p[1, 0, REAL]) / 2)


def score_b(p: np.ndarray) -> float:
    """B: mean of P(real) over both models and both views (flip test-time augmentation)."""
    return float(np.mean(p[:, :, REAL]))


def score_c(p: np.ndarray) -> float:
    """C: the smaller of the two models' P(real) (plain crop)."""
    return float(min(p[0, 0, REAL], p[1, 0, REAL]))


def score_d(p: np.ndarray) -> float:
    """D: geometric mean of the two models' P(real) (plain crop)."""
    return float(np.sqrt(p[0, 0, REAL] * p[1, 0, REAL]))


def score_e(p: np.ndarray) -> float:
    """E: min over models of each model's P(real) averaged over crop and mirror."""
    return float(np.min(np.mean(p[:, :, REAL], axis=1)))


def score_f1(p: np.ndarray) -> float:
    """F1: V2 (scale 2.7) alone."""
    return float(p[0, 0, REAL])


def score_f2(p: np.ndarray) -> float:
    """F2: V1SE (scale 4.0) alone."""
    return float(p[1, 0, REAL])


VARIANTS: dict[str, Callable[[np.ndarray], float]] = {
    "A mean": score_a, "B flipTTA mean": score_b, "C min": score_c, "D geomean": score_d,
    "E flipTTA min": score_e, "F1 V2 2.7x alone": score_f1, "F2 V1SE 4.0x alone": score_f2}


def rule_threshold(live_sw: list[float], attack_sw: list[float]) -> tuple[float, float, float]:
    """(L, H, threshold): L = lowest live window score, H = highest attack window score
    strictly below L (0.0 if none), threshold = (L + H) / 2."""
    low = min(live_sw)
    below = [s for s in attack_sw if s < low]
    high = max(below) if below else 0.0
    return low, high, (low + high) / 2


def band_width(a_scores: np.ndarray, v_scores: np.ndarray, lo: float, hi: float) -> float:
    """Width of the variant's band spanning the same quantiles of its own tuning frame scores
    (``v_scores``) as ``[lo, hi)`` spans in A's (``a_scores``)."""
    a = np.sort(np.asarray(a_scores, np.float64))
    qlo, qhi = np.searchsorted(a, lo) / len(a), np.searchsorted(a, hi) / len(a)
    v = np.sort(np.asarray(v_scores, np.float64))
    return float(np.quantile(v, qhi) - np.quantile(v, qlo))


def auc(pos: list[float], neg: list[float]) -> float:
    """P(pos score > neg score), ties counted half (Mann–Whitney, average ranks)."""
    from scipy.stats import rankdata

    pos_a, neg_a = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    r = rankdata(np.concatenate([pos_a, neg_a]))
    n = len(pos_a)
    return float((r[:n].sum() - n * (n + 1) / 2) / (n * len(neg_a)))


# ---------------------------------------------------------------------------- data
KINDS = ["replay", "print", "bent print", "screen", "print held still"]
CLASSES = ["faces-dev d18-d20", "still", "slight", "moving", "replay live counterparts"]
_CLASS_OF = {"faces-dev": "faces-dev d18-d20", "attack-set": "replay live counterparts"}


@dataclass
class Item:
    """One judged window: kind ("live" or an attack kind), split half, source name, live
    motion class, per-frame records (eval-liveness's) and per-frame softmax (None: no face)."""

    kind: str
    split: str
    name: str
    cls: str
    recs: list[dict]
    probs: list[np.ndarray | None]


class _RecordingTexture:
    """Stands in for ``Liveness.texture_check`` in ``frame_records``: returns exactly
    TextureCheck.score and keeps the four softmax vectors of each face frame, timing the
    crops, the plain-crop model runs and the mirrored-crop model runs (seconds)."""

    def __init__(self, tc) -> None:
        self.tc = tc
        self.probs: list[np.ndarray] = []
        self.secs = np.zeros(3)

    def score(self, frame_rgb: np.ndarray, box_xyxy) -> float:
        from faceunlock.liveness.texture import TEXTURE_MODELS, softmax

        t0 = time.perf_counter()
        cr = self.tc.crops(frame_rgb, box_xyxy)
        t1 = time.perf_counter()
        plain = self.tc.logits_of_crops(cr)
        t2 = time.perf_counter()
        mirror = self.tc.logits_of_crops({s: np.ascontiguousarray(c[:, ::-1]) for s, c in cr.items()})
        t3 = time.perf_counter()
        self.secs += (t1 - t0, t2 - t1, t3 - t2)
        p = np.array([[softmax(plain[m.name]), softmax(mirror[m.name])] for m in TEXTURE_MODELS])
        self.probs.append(p)
        return float(sum(p[i, 0, REAL] for i in range(len(TEXTURE_MODELS))) / len(TEXTURE_MODELS))


def _records(live, rec: _RecordingTexture, frames, fps: float, window: int | None):
    """eval-liveness's frame_records with the recording texture check; returns (records,
    per-frame softmax aligned with the records, timing seconds)."""
    from faceunlock.evaluation import liveness_eval as E

    rec.probs, rec.secs = [], np.zeros(3)
    recs = E.frame_records(SimpleNamespace(engine=live.engine, texture_check=rec), frames, fps, window)
    it = iter(rec.probs)
    probs = [next(it) if "box" in r else None for r in recs]
    assert next(it, None) is None, "one softmax per face frame"
    return recs, probs, rec.secs.copy()


def load_items(shared: Path, cache_dir: Path | None, live, say: Callable[[str], None]) -> tuple[list[Item], np.ndarray]:
    """Every window of the evaluation (clips cut into windows, generator attacks whole) with
    records and softmax; computed from the data (detector included) or read from ``cache_dir``.
    Also the summed timing (crop, plain runs, mirrored runs seconds, face frames)."""
    from faceunlock.evaluation import liveness_eval as E
    from faceunlock.liveness.texture import TextureCheck

    dev = shared / "data" / "faces-dev" / "video_liveness"
    dev2 = shared / "data" / "faces-dev2"
    lfw = shared / "data" / "faces-dev" / "lfw_dev" / "images"
    clips = E.dev_clips(dev, dev2)
    sources = E._sources(dev, E.GENERATOR_LFW, lfw, dev2, E.GENERATOR_CASIA)
    split = E.split_all(clips, E.still_items(dev, dev2), sources)
    cache = E._Cache(cache_dir, f"study-texture-fusion|v1|{E.EVAL_FPS}|{E.MAX_CLIP_S}|{E.CLIP_S}|{E.ATTACK_FPS}|0")
    rec = _RecordingTexture(TextureCheck(threads=1))
    items: list[Item] = []
    timing = np.zeros(4)
    for c in clips:
        def make(c=c):
            fps, frames = E.iter_video(c.path, E.MAX_CLIP_S, E.EVAL_FPS)
            win = round(E.CLIP_S * fps)
            recs, probs, secs = _records(live, rec, frames, fps, win)
            return recs, probs, win, secs
        recs, probs, win, secs = cache.get(f"clip:{c.name}", make)
        timing += (*secs, sum(p is not None for p in probs))
        for s0 in range(0, len(recs) - win + 1, win):
            items.append(Item("live" if c.label == "live" else "replay", split[c.person], c.name,
                              _CLASS_OF.get(c.motion, c.motion), recs[s0:s0 + win], probs[s0:s0 + win]))
        say(f"{c.name}: {len(recs)} frames")
    for src in sources:
        def make(src=src):
            out = {}
            for kind, frames in E.generator_clips(src.image, src.name, 0).items():
                out[kind] = _records(live, rec, frames, E.ATTACK_FPS, None)
            return out
        for kind, (recs, probs, secs) in cache.get(f"gen:{src.name}", make).items():
            timing += (*secs, sum(p is not None for p in probs))
            items.append(Item(kind, split[f"g:{src.name}"], src.name, src.group, recs, probs))
        say(f"generator {src.name}: done")
    return items, timing


# ---------------------------------------------------------------------------- judging
@contextlib.contextmanager
def hold_band(high: float) -> Iterator[None]:
    """Sets the borderline hold's upper band edge (shipped 0.55) for the passive session
    (development study only: patches faceunlock.liveness.passive for the duration)."""
    import faceunlock.liveness.passive as P
    import faceunlock.liveness.tracks as TR

    old = P.HOLD_BAND_HIGH, P.borderline_hold
    P.HOLD_BAND_HIGH, P.borderline_hold = high, functools.partial(TR.borderline_hold, band_high=high)
    try:
        yield
    finally:
        P.HOLD_BAND_HIGH, P.borderline_hold = old


def with_scores(item: Item, f: Callable[[np.ndarray], float]) -> list[dict]:
    """The item's records with the texture score of each face frame replaced by ``f``."""
    return [r if p is None else {**r, "tex": f(p)} for r, p in zip(item.recs, item.probs)]


def accepted(live, recs: list[dict], thr: float, hold: bool) -> bool:
    from faceunlock.evaluation import liveness_eval as E

    return E.sequential(live, recs, threshold=thr, parallax_hold=hold)[0]


def window_score(live, recs: list[dict]) -> float:
    """s_w: supremum of thresholds at which the window is accepted without the hold
    (-1 if never, 24 bisection steps)."""
    if not accepted(live, recs, 0.0, False):
        return -1.0
    lo, hi = 0.0, 1.0 + 1e-9
    if accepted(live, recs, hi, False):
        return hi
    for _ in range(24):
        mid = (lo + hi) / 2
        if accepted(live, recs, mid, False):
            lo = mid
        else:
            hi = mid
    return lo


def frame_scores(items: list[Item], f: Callable[[np.ndarray], float], sp: str) -> tuple[list[float], list[float]]:
    """(live, attack) per-frame scores of one half."""
    lv: list[float] = []
    at: list[float] = []
    for it in items:
        if it.split == sp:
            (lv if it.kind == "live" else at).extend(f(p) for p in it.probs if p is not None)
    return lv, at


def count(live, items: list[Item], vrecs: list[list[dict]], thr: float, band_hi: float, sp: str,
          hold: bool) -> dict[str, list[int]]:
    """{kind or "live: <class>": [errors, windows]} of one half (live: rejected; attack: accepted)."""
    out: dict[str, list[int]] = {}
    with hold_band(band_hi):
        for it, vr in zip(items, vrecs):
            if it.split != sp:
                continue
            a = accepted(live, vr, thr, hold)
            err = (not a) if it.kind == "live" else a
            for k in [it.kind] + ([f"live: {it.cls}"] if it.kind == "live" else []):
                c = out.setdefault(k, [0, 0])
                c[0] += int(err)
                c[1] += 1
    return out


def fmt_counts(c: dict[str, list[int]]) -> str:
    g = lambda k: f"{c[k][0]}/{c[k][1]}" if k in c else "-"  # noqa: E731
    return (f"live {g('live')} [" + " ".join(g(f"live: {x}") for x in CLASSES) + "]  "
            + " ".join(f"{k[:6]} {g(k)}" for k in KINDS))


def study(live, items: list[Item], timing: np.ndarray, say: Callable[[str], None]) -> list[str]:
    """Every variant's table lines (see the module docstring)."""
    from faceunlock.liveness.passive import TEXTURE_THRESHOLD
    from faceunlock.liveness.tracks import HOLD_BAND_HIGH

    lines = []
    n = max(1.0, timing[3])
    crop, plain, mirror = 1000 * timing[:3] / n
    flip = (crop + plain + mirror) / (crop + plain)
    cost = {"A": "1.00 (2 model runs)", "C": "1.00 (same 2 model runs)", "D": "1.00 (same 2 model runs)",
            "B": f"{flip:.2f} (measured: + 2 mirrored runs)", "E": f"{flip:.2f} (measured: + 2 mirrored runs)"}
    lines.append(f"per face frame ({int(timing[3])} frames, one thread, timed when the records were computed): "
                 f"crops {crop:.3f} ms, 2 model runs {plain:.3f} ms, 2 mirrored runs {mirror:.3f} ms")
    a_tune = np.concatenate(frame_scores(items, score_a, "tune"))
    for vn, f in VARIANTS.items():
        t0 = time.time()
        vrecs = [with_scores(it, f) for it in items]
        sw = [window_score(live, vr) for vr in vrecs]
        tl = [(it, s) for it, s in zip(items, sw) if it.split == "tune"]
        low, high, thr = rule_threshold([s for it, s in tl if it.kind == "live"], [s for it, s in tl if it.kind != "live"])
        lv, at = frame_scores(items, f, "tune")
        width = HOLD_BAND_HIGH - TEXTURE_THRESHOLD if f is score_a else band_width(
            a_tune, np.concatenate([lv, at]), TEXTURE_THRESHOLD, HOLD_BAND_HIGH)
        unsep = {k: sum(1 for it, s in tl if it.kind == k and s >= low) for k in KINDS}
        auc_w = auc([s for it, s in tl if it.kind == "live"], [s for it, s in tl if it.kind != "live"])
        ratio = cost.get(vn[0])
        lines.append(f"## {vn}: thr {thr:.4f} (L {low:.4f}, H {high:.4f}) band [{thr:.3f},{thr + width:.3f}) "
                     f"AUCframe tune {auc(lv, at):.4f} report {auc(*frame_scores(items, f, 'report')):.4f} "
                     f"AUCwin tune {auc_w:.4f} unsep {unsep} cost vs A "
                     + (ratio or "n/a (one model: about half of A's model runs)"))
        runs = [("rule", thr, thr + width)] + ([("shipped", TEXTURE_THRESHOLD, HOLD_BAND_HIGH)] if f is score_a else [])
        for name, t, hi in runs:
            for sp in ("tune", "report"):
                for hold in (True, False):
                    c = count(live, items, vrecs, t, hi, sp, hold)
                    lines.append(f"  {name + '|' + sp:15s} {'hold' if hold else 'nohold':6s} {fmt_counts(c)}")
        # hold-aware: highest grid threshold (contiguous from below) keeping tuning live 0 errors with the hold
        grid = np.arange(max(0.0, low - 0.2), low + 1e-9, 0.002)
        tl_live = [vr for it, vr in zip(items, vrecs) if it.split == "tune" and it.kind == "live"]
        k = 0
        while k < len(grid):
            with hold_band(float(grid[k]) + width):
                if not all(accepted(live, vr, float(grid[k]), True) for vr in tl_live):
                    break
            k += 1
        if k:
            t = float(grid[k - 1])
            lines.append(f"  hold-aware thr {t:.3f} (first failing grid point "
                         f"{float(grid[k]) if k < len(grid) else None}), band [{t:.3f},{t + width:.3f})")
            for hold in (True, False):
                for sp in ("tune", "report"):
                    c = count(live, items, vrecs, t, t + width, sp, hold)
                    lines.append(f"  {'hold-aware|' + sp:15s} {'hold' if hold else 'nohold':6s} {fmt_counts(c)}")
        say(f"{vn}: {time.time() - t0:.0f} s")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path("../shared"), help="the dev data root (read only; default ../shared)")
    ap.add_argument("--cache", type=Path, default=None, help="pickle cache of per-frame records and softmax (optional)")
    ap.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = ap.parse_args(argv)
    from faceunlock.engine import FaceEngine
    from faceunlock.liveness import Liveness

    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.time()
    live = Liveness(FaceEngine(threads=1))
    items, timing = load_items(args.shared, args.cache, live, say)
    t1 = time.time()
    lines = [f"windows: {sum(it.kind == 'live' for it in items)} live, {sum(it.kind != 'live' for it in items)} attack"]
    lines += study(live, items, timing, say)
    lines.append(f"run time: data {t1 - t0:.0f} s, study {time.time() - t1:.0f} s")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
