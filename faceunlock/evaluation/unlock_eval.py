"""``faceunlock eval-unlock``: false rejects and false accepts per unlock attempt.

Two evaluations live here.

:func:`evaluate` (labelled image folders): for every identity with more than K images,
the first K (sorted by file name) enrol it through :meth:`FaceUnlock.enroll` (real quality
gates, real template selection, a real encrypted store in a temporary directory). Every
remaining image of that identity is one genuine attempt; every image of every other
identity is one impostor attempt against it. An attempt's score is
:func:`~faceunlock.unlock.fused_score` of its template against the user's templates — what
:meth:`FaceUnlock.unlock` compares with the threshold on each frame. Images without a face
count as failed genuine attempts (they never unlock) and are reported separately.

:func:`evaluate_dev` (the dev data, split by person into a tuning and a reporting half):
videos — each person enrolled through :meth:`FaceUnlock.enroll` from the first 3 s of
their clip, genuine attempts from later windows of it, impostor attempts from every other
person's windows — and photo sets per source and group (see its docstring). Attempts are
replayed frame by frame through the same :class:`~faceunlock.decision.FrameDecision` and
early-stop rule that :meth:`FaceUnlock.unlock` uses, with liveness off (liveness is
measured separately by ``eval-liveness``).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import EnrollmentError, FaceUnlockError
from ..image import load_image
from ..policy import Policy
from ..store import TemplateStore
from ..unlock import FaceUnlock, fused_score
from .dataset import LabelledImage, scan
from .metrics import clopper_pearson_upper, upper95

__all__ = ["UnlockEvaluation", "evaluate"]


@dataclass
class UnlockEvaluation:
    enroll_k: int
    threshold: float
    identities_enrolled: int
    enrol_failures: int
    genuine_attempts: int
    false_rejects: int
    genuine_no_face: int
    impostor_attempts: int
    false_accepts: int
    far_upper95: float
    seconds: float

    @property
    def frr(self) -> float:
        return self.false_rejects / max(self.genuine_attempts, 1)

    @property
    def far(self) -> float:
        return self.false_accepts / max(self.impostor_attempts, 1)

    def text(self) -> str:
        return (
            f"enrolled {self.identities_enrolled} identities with K={self.enroll_k} images each "
            f"({self.enrol_failures} could not be enrolled); threshold {self.threshold:.4f}\n"
            f"FRR per attempt: {self.frr * 100:.2f} % ({self.false_rejects} / {self.genuine_attempts}; "
            f"{self.genuine_no_face} of them without a detected face)\n"
            f"FAR per attempt: {self.far:.2e} ({self.false_accepts} / {self.impostor_attempts:,}; "
            f"95 % upper bound {self.far_upper95:.1e})\n"
            f"time {self.seconds:.1f} s"
        )

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(frr=self.frr, far=self.far)
        return d


def _pad(img: np.ndarray, pad: float) -> np.ndarray:
    if not pad:
        return img
    import cv2

    p = int(max(img.shape[:2]) * pad)
    return cv2.copyMakeBorder(img, p, p, p, p, cv2.BORDER_REPLICATE)


def evaluate(
    engine, roots: list[Path], *, enroll_k: int = 3, policy: Policy | None = None,
    exclude: tuple[str, ...] = (), pad: float = 0.3,
) -> UnlockEvaluation:
    t0 = time.perf_counter()
    images = scan(roots, exclude)
    by_id: dict[str, list[LabelledImage]] = {}
    for item in images:
        by_id.setdefault(item.identity, []).append(item)
    policy = policy or Policy(enroll_min_templates=enroll_k, enroll_max_templates=max(enroll_k, 5),
                              min_face_px=40, lockout_after=10**9, permanent_after=None)
    frames = {item.path: _pad(load_image(item.path), pad) for item in images}
    templates: dict[Path, np.ndarray | None] = {}
    for item in images:
        try:
            templates[item.path] = engine.template(frames[item.path])
        except FaceUnlockError:
            templates[item.path] = None
    with tempfile.TemporaryDirectory() as tmp:
        store = TemplateStore(Path(tmp) / "eval.fus", key=os.urandom(32))
        fu = FaceUnlock(store, engine=engine, policy=policy)
        threshold = fu.threshold
        galleries: dict[str, np.ndarray] = {}
        enrol_fail = 0
        for ident, items in by_id.items():
            if len(items) <= enroll_k:
                continue
            try:
                fu.enroll(ident, [frames[i.path] for i in items[:enroll_k]])
            except EnrollmentError:
                enrol_fail += 1
                continue
            galleries[ident] = store.get(ident).templates
    gen = fr = nf = imp = fa = 0
    for ident, gallery in galleries.items():
        for item in by_id[ident][enroll_k:]:
            gen += 1
            t = templates[item.path]
            if t is None:
                fr += 1
                nf += 1
            elif fused_score(gallery, t)[0] < threshold:
                fr += 1
        for other, items in by_id.items():
            if other == ident:
                continue
            for item in items:
                t = templates[item.path]
                if t is None:
                    continue
                imp += 1
                fa += fused_score(gallery, t)[0] >= threshold
    return UnlockEvaluation(enroll_k, threshold, len(galleries), enrol_fail, gen, fr, nf, imp, fa,
                            clopper_pearson_upper(fa, imp), time.perf_counter() - t0)


# =========================================================================== dev-data suite
# Videos and photo sets from ../shared/data (faces-dev and faces-dev2), split by person into
# a tuning and a reporting half; attempts replayed through the unlock decision rule.

import csv
import hashlib
import re
from collections.abc import Iterator, Sequence

from ..decision import (
    DEFAULT_ADAPT, DEFAULT_RULE, SINGLE_FRAME, AdaptRule, FrameDecision, FrameRule, adapt_gallery, confident_score,
)

HALVES = ("tuning", "reporting")
GROUPS = ("White", "Black", "East Asian", "South Asian")
UNLABELLED = "unlabelled"
VIDEO_EXTS = {".mp4", ".mov", ".avi", ".mkv", ".webm"}


def _clear_miss() -> tuple[int, float]:
    """The early-stop rule of :meth:`FaceUnlock.unlock` (consecutive clear misses end an attempt)."""
    from .. import unlock as U

    return int(getattr(U, "CLEAR_MISS_FRAMES", 10**9)), float(getattr(U, "CLEAR_MISS_MARGIN", 0.0))


def video_halves(videos: "list[Video]") -> dict[str, str]:
    """person → half for the dev videos, by the dev data's split rule
    (:func:`faceunlock.evaluation.groups.split_half`) within each group (source
    ``"videos/<group>"``), so that every group has people on both sides."""
    from .groups import split_half

    out: dict[str, str] = {}
    for g in dict.fromkeys(v.group for v in videos):
        out.update(split_half(f"videos/{g}", [v.person for v in videos if v.group == g]))
    return out


def replay(scores: Sequence[float | None], threshold: float, rule: FrameRule,
           max_frames: int) -> tuple[bool, int, float | None]:
    """One attempt replayed as :meth:`FaceUnlock.unlock` reads it, the liveness verdict left out.

    ``scores``: per frame, in reading order, the fused score of its face (None: no face).
    Frames are fed to a :class:`FrameDecision` until it grants, ``max_frames`` frames are
    read, or the attempt ends early on consecutive clear misses. Returns (granted, frames
    read, the grant's score — the weakest granting frame's — or None).
    """
    dec = FrameDecision(threshold, rule)
    n_clear, margin = _clear_miss()
    clear = 0
    used = 0
    for s in scores[:max_frames]:
        used += 1
        if s is None:
            continue
        v = dec.add(float(s))
        if v.granted:
            return True, used, v.score
        clear = clear + 1 if s < threshold - margin else 0
        if clear >= n_clear:
            break
    return False, used, None


def rule_score(scores: Sequence[float | None], rule: FrameRule) -> float | None:
    """The highest threshold at which ``rule`` would be met somewhere in ``scores`` (the
    k-th best score of the best window of n face frames; None without k face frames).
    Ignores the early stop, so it is an upper bound for impostors' margins."""
    s = [float(v) for v in scores if v is not None]
    best = None
    for i in range(rule.k - 1, len(s)):
        w = sorted(s[max(0, i - rule.n + 1): i + 1], reverse=True)
        if len(w) >= rule.k:
            best = w[rule.k - 1] if best is None else max(best, w[rule.k - 1])
    return best


def replay_scores(scores: Sequence[float | None], threshold: float, rule: FrameRule,
                  max_frames: int) -> tuple[bool, int]:
    """(granted, frames read) of :func:`replay`."""
    return replay(scores, threshold, rule, max_frames)[:2]


@dataclass
class Tally:
    """Attempts and errors for one row of the report."""

    attempts: int = 0
    errors: int = 0
    frames: int = 0  # frames read by granted genuine attempts (latency), else 0
    confident: int = 0  # grants confident enough to adapt the templates (decision.adapt_gallery)
    low: float = float("inf")  # lowest rule_score of an attempt
    high: float = float("-inf")  # highest rule_score of an attempt

    def add(self, error: bool, frames: int = 0, confident: bool = False, score: float | None = None) -> None:
        if score is not None:
            self.low, self.high = min(self.low, score), max(self.high, score)
        self.attempts += 1
        self.errors += int(error)
        self.frames += frames
        self.confident += int(confident)

    @property
    def rate(self) -> float:
        return self.errors / self.attempts if self.attempts else float("nan")

    @property
    def upper95(self) -> float:
        """95 % upper bound (:func:`~faceunlock.evaluation.metrics.upper95`)."""
        return upper95(self.errors, self.attempts)

    def cell(self, percent: bool) -> str:
        if not self.attempts:
            return "–"
        if percent:
            return f"{self.rate * 100:.2f} % ({self.errors}/{self.attempts:,}; ≤ {self.upper95 * 100:.2f} %)"
        return f"{self.errors}/{self.attempts:,} (≤ {self.upper95:.1e})"


@dataclass(frozen=True)
class Video:
    path: Path
    person: str
    source: str
    group: str


def _group_from_notes(notes: str) -> str:
    for g in ("East Asian", "South Asian", "Black", "White"):
        if re.search(rf"\b{g}\b", notes):
            return g
    return UNLABELLED


def dev_videos(data_root: Path) -> list[Video]:
    """The real-person dev videos: faces-dev's LivePortrait clips d18–d20 and faces-dev2's
    videos (group from the apparent group in ``videos.csv``'s notes; the two MEAD M030
    clips are one person)."""
    out: list[Video] = []
    lp = data_root / "faces-dev" / "video_liveness" / "liveportrait_driving"
    if lp.is_dir():
        for p in sorted(lp.iterdir()):
            if p.suffix.lower() in VIDEO_EXTS:
                out.append(Video(p, f"faces-dev/{p.stem}", "faces-dev videos", UNLABELLED))
    d2 = data_root / "faces-dev2" / "videos"
    csv_path = d2 / "videos.csv"
    if csv_path.is_file():
        with open(csv_path, newline="") as fh:
            for row in csv.DictReader(fh):
                p = d2.parent / row["file"]
                if not p.is_file():
                    continue
                m = re.search(r"MEAD[ _](M|W)0*(\d+)", row["notes"]) or re.search(r"_(M|W)(\d{3})_", p.name)
                person = f"MEAD/{m.group(1)}{int(m.group(2)):03d}" if m else f"faces-dev2/{p.stem}"
                out.append(Video(p, person, "faces-dev2 videos", _group_from_notes(row["notes"])))
    return out


def _frames(path: Path) -> tuple[Iterator[np.ndarray], float, int]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FaceUnlockError(f"cannot open video {path}")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or 25.0
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)

    def gen() -> Iterator[np.ndarray]:
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    return
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()

    return gen(), fps, n


def _code_tag() -> str:
    """sha256 of the code that turns frames into templates (a cache made by other code is stale)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for name in ("detect.py", "align.py", "engine.py", "embed.py", "image.py"):
        f = root / name
        h.update(f.read_bytes() if f.is_file() else b"")
    return h.hexdigest()


def _cache_file(cache: Path | None, engine, kind: str, key: str) -> Path | None:
    if cache is None:
        return None
    spec = engine.embedder_spec
    tag = hashlib.sha256(f"{spec!r}|{_code_tag()}|{kind}|{key}".encode()).hexdigest()[:20]
    d = Path(cache) / spec.name
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{kind}-{tag}.npz"


def _gates(policy: Policy) -> str:
    """The policy fields that decide what enrolment keeps (the cache key of a gallery)."""
    names = ("min_face_px", "max_yaw_deg", "max_pitch_deg", "min_sharpness", "min_brightness", "max_brightness",
             "enroll_min_templates", "enroll_max_templates")
    return ",".join(f"{n}={getattr(policy, n)!r}" for n in names)


def _face_templates(engine, frame: np.ndarray) -> np.ndarray | None:
    """The template of the first detected face, as :meth:`FaceUnlock.unlock` makes it."""
    faces = engine.detect(frame)
    return engine.face_template(frame, faces[0]) if faces else None


@dataclass
class _VideoData:
    gallery: np.ndarray | None  # None: enrolment failed
    windows: list[list[np.ndarray | None]]  # per attempt window: per frame template or None
    enrol_s: float


def _video_data(engines: list, video: Video, policy: Policy, *, enrol_s: float, stride_s: float,
                max_windows: int, window_s: float, max_window_frames: int, cache: Path | None) -> list[_VideoData]:
    """Enrol ``video``'s person from its first ``enrol_s`` seconds (at most half the clip)
    with each engine, and the templates of the frames of its attempt windows. A window is
    what one unlock attempt may read: ``window_s`` seconds of frames, at most
    ``max_window_frames`` (cut short by the clip's end, never below ``policy.max_frames``);
    windows start every ``stride_s`` seconds after enrolment (at most ``max_windows``,
    spread evenly over the clip)."""
    gen, fps, n = _frames(video.path)
    gen.close()
    duration = n / fps if n else 0.0
    e_s = min(enrol_s, 0.5 * duration) if duration else enrol_s
    e_frames = int(round(e_s * fps))
    per_window = max(policy.max_frames, min(max_window_frames, int(round(window_s * fps))))
    stride = max(1, int(round(stride_s * fps)))
    starts = list(range(e_frames, n - policy.max_frames + 1, stride))
    if len(starts) > max_windows:
        starts = [starts[int(round(j))] for j in np.linspace(0, len(starts) - 1, max_windows)]
    spans = [(s, min(s + per_window, n)) for s in starts]
    key = f"{video.path}|{video.path.stat().st_size}|{e_frames}|{spans}|{_gates(policy)}"
    out: list[_VideoData | None] = []
    todo = []
    for i, eng in enumerate(engines):
        f = _cache_file(cache, eng, "video", key)
        if f is not None and f.is_file():
            z = np.load(f, allow_pickle=False)
            g = z["gallery"] if z["gallery"].size else None
            tp, ok, bounds = z["templates"], z["ok"], z["bounds"]
            wins = [[tp[j] if ok[j] else None for j in range(a, b)] for a, b in bounds]
            out.append(_VideoData(g, wins, float(z["enrol_s"])))
        else:
            out.append(None)
            todo.append(i)
    if not todo:
        return out  # type: ignore[return-value]
    wanted = {k for a, b in spans for k in range(a, b)}
    results: dict[int, dict[int, np.ndarray | None]] = {i: {} for i in todo}
    galleries: dict[int, np.ndarray | None] = {}
    for i in todo:
        gen, _, _ = _frames(video.path)
        with tempfile.TemporaryDirectory() as tmp:
            store = TemplateStore(Path(tmp) / "v.fus", key=os.urandom(32))
            fu = FaceUnlock(store, engine=engines[i], policy=policy, liveness=False)
            head = (fr for k, fr in zip(range(e_frames), gen))
            try:
                fu.enroll("owner", head)
                galleries[i] = store.get("owner").templates
            except EnrollmentError:
                galleries[i] = None
        gen.close()
    last = max(wanted, default=-1)
    gen, _, _ = _frames(video.path)
    for k, frame in enumerate(gen):
        if k > last:
            break
        if k in wanted:
            for i in todo:
                results[i][k] = _face_templates(engines[i], frame)
    gen.close()
    for i in todo:
        wins = [[results[i].get(k) for k in range(a, b)] for a, b in spans]
        out[i] = _VideoData(galleries[i], wins, e_s)
        f = _cache_file(cache, engines[i], "video", key)
        if f is not None:
            flat = [t for w in wins for t in w]
            dim = engines[i].embedder_spec.dim
            tp = np.stack([t if t is not None else np.zeros(dim, np.float32) for t in flat]) if flat else np.zeros((0, dim), np.float32)
            ok = np.array([t is not None for t in flat], bool)
            ends = np.cumsum([len(w) for w in wins]).astype(int)
            bounds = np.stack([ends - [len(w) for w in wins], ends], axis=1) if wins else np.zeros((0, 2), int)
            g = galleries[i] if galleries[i] is not None else np.zeros((0,), np.float32)
            np.savez(f, gallery=g, templates=tp, ok=ok, bounds=bounds, enrol_s=e_s)
    return out  # type: ignore[return-value]


def dev_photos(data_root: Path):
    """The dev photo sets (:func:`faceunlock.evaluation.groups.load_dev_images`): LFW dev, ORL,
    face-api.js, CASIA-FaceV5 (East Asian) and UTKFace (one photo per "person", four groups)."""
    from .groups import load_dev_images

    return load_dev_images(data_root)


def _photo_templates(engine, photos: list, cache: Path | None) -> list[np.ndarray | None]:
    key = "|".join(f"{p.path}:{p.path.stat().st_size}:{p.pad}" for p in photos)
    f = _cache_file(cache, engine, "photos", key)
    if f is not None and f.is_file():
        z = np.load(f, allow_pickle=False)
        return [t if ok else None for t, ok in zip(z["templates"], z["ok"])]
    out: list[np.ndarray | None] = []
    for p in photos:
        try:
            out.append(engine.template(_pad(load_image(p.path), p.pad)))
        except FaceUnlockError:
            out.append(None)
    if f is not None:
        dim = engine.embedder_spec.dim
        np.savez(f, templates=np.stack([t if t is not None else np.zeros(dim, np.float32) for t in out]),
                 ok=np.array([t is not None for t in out], bool))
    return out


def _photo_galleries(engine, photos: list, enroll_k: int, policy: Policy,
                     cache: Path | None) -> tuple[dict[str, np.ndarray], int]:
    """Every person with more than ``enroll_k`` photos enrolled from the first ``enroll_k``."""
    by: dict[str, list] = {}
    for p in photos:
        if p.source != "utkface":
            by.setdefault(p.person, []).append(p)
    key = f"{enroll_k}|{_gates(policy)}|" + "|".join(f"{p.path}:{p.pad}" for p in photos if p.source != "utkface")
    f = _cache_file(cache, engine, "galleries", key)
    if f is not None and f.is_file():
        z = np.load(f, allow_pickle=False)
        names = [str(s) for s in z["names"]]
        return {n: z[f"g{i}"] for i, n in enumerate(names)}, int(z["failed"])
    galleries: dict[str, np.ndarray] = {}
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        store = TemplateStore(Path(tmp) / "p.fus", key=os.urandom(32))
        fu = FaceUnlock(store, engine=engine, policy=policy, liveness=False)
        for person, items in by.items():
            if len(items) <= enroll_k:
                continue
            try:
                fu.enroll(person, [_pad(load_image(p.path), p.pad) for p in items[:enroll_k]])
                galleries[person] = store.get(person).templates
            except EnrollmentError:
                failed += 1
    if f is not None:
        names = list(galleries)
        np.savez(f, names=np.array(names), failed=failed, **{f"g{i}": galleries[n] for i, n in enumerate(names)})
    return galleries, failed


def _fused_matrix(gallery: np.ndarray, probes: np.ndarray, top_k: int) -> np.ndarray:
    """fused_score of every probe row against one gallery (mean of its top_k similarities)."""
    sims = probes @ gallery.T
    k = min(top_k, gallery.shape[0])
    return np.sort(sims, axis=1)[:, ::-1][:, :k].mean(axis=1)


@dataclass
class DevEvaluation:
    """Per-attempt results of :func:`evaluate_dev`.

    rows: (embedder, rule, kind, half, label) → (genuine Tally, impostor Tally); kind is
    "videos" or "photos"; label a group, a source or "all".
    """

    thresholds: dict[str, float]
    rules: list[FrameRule]
    rows: dict[tuple[str, str, str, str, str], tuple[Tally, Tally]]
    notes: list[str]
    seconds: float

    def _row(self, key) -> tuple[Tally, Tally]:
        if key not in self.rows:
            self.rows[key] = (Tally(), Tally())
        return self.rows[key]

    def text(self) -> str:
        out = []
        embs = sorted({k[0] for k in self.rows}, key=list(self.thresholds).index)
        for kind in ("videos", "videos, templates adapted", "photos"):
            labels = [k[4] for k in self.rows if k[2] == kind]
            labels = list(dict.fromkeys(labels))
            if not labels:
                continue
            out.append(f"\n### {kind}: per attempt (liveness verdict left out: every attempt counts as live)\n")
            out.append("| embedder | rule | rows | tuning FRR | tuning FAR | reporting FRR | reporting FAR |")
            out.append("|---|---|---|---|---|---|---|")
            kind_rules = list(dict.fromkeys(k[1] for k in self.rows if k[2] == kind))
            for emb in embs:
                for rule in kind_rules:
                    for lab in labels:
                        cells = []
                        for h in HALVES:
                            g, i = self.rows.get((emb, rule, kind, h, lab), (Tally(), Tally()))
                            cells += [g.cell(True), i.cell(False)]
                        if all(c == "–" for c in cells):
                            continue
                        out.append(f"| {emb} | {rule} | {lab} | " + " | ".join(cells) + " |")
        vrows = [(k, v) for k, v in self.rows.items() if k[2] == "videos" and k[4] == "all"]
        if vrows:
            out.append("\n### videos: frames read by granted genuine attempts, and confident grants "
                       "(score ≥ threshold + 0.25·(1 − threshold): the templates may adapt)\n")
            out.append("| embedder | rule | half | mean frames to grant | confident genuine grants | confident impostor "
                       "grants | threshold | lowest genuine / highest impostor rule score |")
            out.append("|---|---|---|---|---|---|---|---|")
            for (emb, rule, _, h, _), (g, i) in vrows:
                granted = g.attempts - g.errors
                mean = f"{g.frames / granted:.1f}" if granted else "–"
                out.append(f"| {emb} | {rule} | {h} | {mean} | {g.confident}/{granted} | {i.confident}/{i.attempts:,} | "
                           f"{self.thresholds[emb]:.4f} | {g.low:.4f} / {i.high:.4f} |")
        out.append("")
        out.append("thresholds: " + ", ".join(f"{k} {v:.4f}" for k, v in self.thresholds.items()))
        out.extend(self.notes)
        out.append(f"time {self.seconds:.1f} s")
        return "\n".join(out)

    def as_dict(self) -> dict:
        return {
            "thresholds": self.thresholds,
            "rules": [r.name for r in self.rules],
            "rows": [
                {"embedder": k[0], "rule": k[1], "kind": k[2], "half": k[3], "label": k[4],
                 "genuine_attempts": g.attempts, "false_rejects": g.errors, "frr_upper95": g.upper95,
                 "genuine_frames": g.frames, "genuine_confident": g.confident, "impostor_confident": i.confident,
                 "genuine_lowest_rule_score": g.low, "impostor_highest_rule_score": i.high,
                 "impostor_attempts": i.attempts, "false_accepts": i.errors, "far_upper95": i.upper95}
                for k, (g, i) in self.rows.items()
            ],
            "notes": self.notes,
            "seconds": self.seconds,
        }


def _window_scores(gal: np.ndarray, win: list, top_k: int) -> list[float | None]:
    ok = [t for t in win if t is not None]
    sc = _fused_matrix(gal, np.stack(ok), top_k) if ok else np.zeros(0)
    it = iter(sc.tolist())
    return [next(it) if t is not None else None for t in win]


def _score_videos(ev: "DevEvaluation", name: str, kind: str, thr: float, rules, top_k: int, vids, data, e: int,
                  halves: dict[str, str], galleries: dict[int, np.ndarray]) -> None:
    """Every attempt window against every enrolled gallery of the same half, per rule."""
    for a, gal in galleries.items():
        va = vids[a]
        ha = halves[va.person]
        for vb, db in zip(vids, data):
            if halves[vb.person] != ha:
                continue
            genuine = va.person == vb.person  # another clip of the same person is genuine too
            for win in db[e].windows:
                scores = _window_scores(gal, win, top_k)
                for rule in rules:
                    granted, used, gs = replay(scores, thr, rule, len(scores))
                    rs = rule_score(scores, rule)
                    sure = gs is not None and gs >= confident_score(thr, DEFAULT_ADAPT.margin)
                    labels = ["all", vb.group]
                    if not genuine and va.group == vb.group and va.group != UNLABELLED:
                        labels.append("same group")
                    for lab in labels:
                        g, i = ev._row((name, rule.name, kind, ha, lab))
                        if genuine:
                            g.add(not granted, used if granted else 0, sure, rs)
                        else:
                            i.add(granted, 0, sure, rs)


def _adapted_galleries(vids, data, e: int, galleries: dict[int, np.ndarray], thr: float, top_k: int,
                       policy: Policy) -> tuple[dict[int, np.ndarray], int]:
    """Each owner's gallery after unlocking, in order, with every attempt window of their own
    clip: a grant by :data:`DEFAULT_RULE` feeds the granting frame's template to
    :func:`adapt_gallery` (as :meth:`FaceUnlock.unlock` does with liveness passed)."""
    rule = AdaptRule(max_templates=policy.enroll_max_templates,
                     protected=min(policy.enroll_min_templates, policy.enroll_max_templates))
    out, n = {}, 0
    for a, gal in galleries.items():
        for win in data[a][e].windows:
            scores = _window_scores(gal, win, top_k)
            granted, used, gs = replay(scores, thr, DEFAULT_RULE, len(scores))
            if not granted:
                continue
            new = adapt_gallery(gal, win[used - 1], gs, thr, live=True, rule=rule, top_k=top_k)
            if new is not None:
                gal, n = new, n + 1
        out[a] = gal
    return out, n


def evaluate_dev(
    engines: list, data_root: Path, *, rules: Sequence[FrameRule] = (SINGLE_FRAME, DEFAULT_RULE),
    enroll_k: int = 3, policy: Policy | None = None, videos: bool = True, photos: bool = True,
    enrol_s: float = 3.0, stride_s: float = 0.5, max_windows: int = 20, window_s: float | None = None,
    max_window_frames: int | None = None,
    cache: Path | None = None, log=None, adapt: bool = True,
) -> DevEvaluation:
    """Per-attempt FRR and FAR on the dev data (``data_root`` holds faces-dev and faces-dev2),
    for each engine (embedder) and each frame rule, on both halves of a split by person.

    Videos: each clip's person is enrolled through :meth:`FaceUnlock.enroll` from its first
    ``enrol_s`` seconds (at most half the clip). An attempt reads what an unlock with
    liveness on may read: ``window_s`` seconds of camera time (default
    ``policy.timeout_s``), at most ``max_window_frames`` frames (default
    ``faceunlock.unlock.MAX_ATTEMPT_FRAMES``); attempts start every ``stride_s`` seconds
    after enrolment (at most ``max_windows`` per clip, so they overlap). A window of the
    same person is a genuine attempt, a window of every other person an impostor attempt
    (two clips of one person are one person). Each attempt is replayed frame by frame
    (:func:`replay`: the frame rule and the early stop on clear misses) with the liveness
    verdict left out: every attempt counts as live. Rows: per group of the attempting
    person, "same group" (impostor and owner in one labelled group) and all. With
    ``adapt``, the same attempts again against galleries adapted by each owner's own
    attempts (kind "videos, templates adapted"; its genuine rows reuse the attempts that
    adapted, so they are optimistic — the impostor rows are the point).

    Photos: every person of LFW dev, ORL, face-api.js and CASIA-FaceV5 with more than
    ``enroll_k`` photos is enrolled from the first ``enroll_k``; each other photo of them is
    a genuine attempt; every photo of every other person — those sets and the 4,000
    UTKFace adults — is an impostor attempt. A photo is a still attempt: its frames are
    identical, so every k-of-n rule decides as one frame does (score ≥ threshold). Rows:
    per source (genuine) and per source/group of the impostor, plus East Asian impostors
    against the East Asian (CASIA) users.

    An attempt belongs to a half when its person (and, for an impostor attempt, the
    enrolled owner) is in that half; cross-half impostor attempts are left out.
    """
    t0 = time.perf_counter()
    rules = list(rules)
    policy = policy or Policy(enroll_min_templates=enroll_k, enroll_max_templates=max(enroll_k, 5),
                              min_face_px=40, lockout_after=10**9, permanent_after=None)
    say = log or (lambda msg: None)
    from .. import unlock as U

    window_s = window_s if window_s is not None else policy.timeout_s
    max_window_frames = max_window_frames or int(getattr(U, "MAX_ATTEMPT_FRAMES", getattr(U, "LIVENESS_MAX_FRAMES", 90)))
    ev = DevEvaluation({}, rules, {}, [], 0.0)
    names = []
    for eng in engines:
        with tempfile.TemporaryDirectory() as tmp:
            fu = FaceUnlock(TemplateStore(Path(tmp) / "t.fus", key=os.urandom(32)), engine=eng, policy=policy,
                            liveness=False)
            ev.thresholds[eng.embedder_spec.name] = fu.threshold
        names.append(eng.embedder_spec.name)
    top_k = _top_k()
    if videos:
        vids = dev_videos(Path(data_root))
        halves = video_halves(vids)
        data = []
        for v in vids:
            say(f"video {v.path.name}")
            data.append(_video_data(engines, v, policy, enrol_s=enrol_s, stride_s=stride_s, max_windows=max_windows,
                                    window_s=window_s, max_window_frames=max_window_frames, cache=cache))
        ev.notes.append(
            f"videos: {len(vids)} clips of {len({v.person for v in vids})} people; enrolled from the first "
            f"{enrol_s:g} s (at most half a clip); an attempt reads up to {window_s:g} s of frames "
            f"(camera time, as an unlock with liveness on; at most {max_window_frames} frames) and ends early after {_clear_miss()[0]} clear misses in a row; attempts "
            f"start every {stride_s:g} s after enrolment (they overlap), at most {max_windows} per clip")
        for e, name in enumerate(names):
            thr = ev.thresholds[name]
            fails = [v.path.name for v, d in zip(vids, data) if d[e].gallery is None]
            ev.notes.append(f"{name}: {len(vids) - len(fails)} clips enrolled; enrolment failed: {', '.join(fails) or 'none'}")
            enrolled = {a: d[e].gallery for a, d in enumerate(data) if d[e].gallery is not None}
            self_score = lambda kind, gals: _score_videos(ev, name, kind, thr, rules, top_k, vids, data, e, halves, gals)  # noqa: E731
            self_score("videos", enrolled)
            if adapt:
                adapted, n_adapt = _adapted_galleries(vids, data, e, enrolled, thr, top_k, policy)
                ev.notes.append(f"{name}: templates adapted {n_adapt} times over the owners' own attempts "
                                f"({DEFAULT_RULE.name}, confident grants, every attempt counted as live)")
                self_score("videos, templates adapted", adapted)
    if photos:
        ph = dev_photos(Path(data_root))
        ev.notes.append(
            f"photos: {len(ph)} photos ({', '.join(f'{s} {sum(p.source == s for p in ph)}' for s in dict.fromkeys(p.source for p in ph))}); "
            f"users enrolled from their first {enroll_k} photos; a photo is a still attempt")
        for e, (eng, name) in enumerate(zip(engines, names)):
            say(f"photos with {name}")
            thr = ev.thresholds[name]
            tpls = _photo_templates(eng, ph, cache)
            galleries, failed = _photo_galleries(eng, ph, enroll_k, policy, cache)
            ev.notes.append(f"{name}: {len(galleries)} photo users enrolled, {failed} failed the quality gates; "
                            f"{sum(t is None for t in tpls)} photos without a face (a failed genuine attempt; "
                            "not an impostor attempt)")
            have = np.array([t is not None for t in tpls])
            dim = eng.embedder_spec.dim
            mat = np.stack([t if t is not None else np.zeros(dim, np.float32) for t in tpls])
            first = {}
            for idx, p in enumerate(ph):
                first.setdefault(p.person, []).append(idx)
            group_of = {p.person: p.group for p in ph}
            half = {p.person: p.half for p in ph}
            for owner, gal in galleries.items():
                ho = half[owner]
                scores = _fused_matrix(gal, mat, top_k)
                enrolled = set(first[owner][:enroll_k])
                for idx, p in enumerate(ph):
                    if p.half != ho or idx in enrolled:
                        continue
                    acc = bool(have[idx]) and scores[idx] >= thr
                    lab = _photo_label(p)
                    if p.person == owner:
                        for lb in ("all", lab):
                            ev._row((name, STILL, "photos", ho, lb))[0].add(not acc, 1 if acc else 0)
                    elif have[idx]:
                        labs = ["all", lab]
                        if p.group == "East Asian" and group_of[owner] == "East Asian":
                            labs.append("East Asian vs East Asian users")
                        for lb in labs:
                            ev._row((name, STILL, "photos", ho, lb))[1].add(acc)
    ev.notes.append("liveness verdict left out of every attempt: each counts as live (liveness is measured "
                    "separately: faceunlock eval-liveness); "
                    "FRR/FAR bounds: one-sided 95 % (3/n at 0 errors, else Clopper–Pearson)")
    ev.seconds = time.perf_counter() - t0
    return ev


STILL = "any (still photo)"


def _photo_label(p) -> str:
    return {"utkface": f"UTKFace {p.group}", "casia": "CASIA East Asian"}.get(p.source, p.group)


def _top_k() -> int:
    from .. import unlock as U

    return int(getattr(U, "TOP_K", 3))
