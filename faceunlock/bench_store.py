"""``faceunlock bench-store``: store and matching cost of unlock and identify vs user count.

For each user count N a real encrypted store is built in a fresh temporary directory
(key file beside it, removed afterwards) holding N users of synthetic random unit
templates (``--templates`` rows each, the embedder's dimension). Then, with the real
:class:`~faceunlock.FaceUnlock` accounting methods and the real store (real file I/O,
``fsync``, HMAC and AES-GCM), it times:

* unlock, store: the check-and-charge update before the first frame, plus the refund
  update of a grant — what one granted ``unlock`` costs in store time (a denied one
  costs the charge only);
* unlock, matching per frame: :func:`~faceunlock.unlock.fused_score` of one probe
  template against the user's templates;
* identify, store: the one-read-one-write charge of every candidate, plus the refund of
  the identified user; and the file reads / writes counted per attempt;
* identify, matching per frame: :func:`fused_score` against all N users' templates.

Times are medians over ``--repeat`` runs (fewer at large N), in milliseconds, one thread
(BLAS thread pools are set to 1 by re-running in a child process when needed). Face
detection and embedding are not included: ``faceunlock bench`` times those per frame.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["register", "run", "main"]

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def register(sub) -> None:
    """Add the ``bench-store`` sub-command to the CLI's sub-parsers."""
    p = sub.add_parser("bench-store", help="store and matching time of unlock and identify at 1..10,000 users")
    p.add_argument("--users", default="1,100,1000,10000", help="comma-separated user counts (default 1,100,1000,10000)")
    p.add_argument("--templates", type=int, default=15, help="templates per user (default 15, the enrolment maximum)")
    p.add_argument("--repeat", type=int, default=9, help="timed runs at <= 100 users (fewer at larger counts)")
    p.add_argument("--dir", type=Path, help="parent of the temporary store folders (default: the system temp dir)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=main)


class _CountingStore:
    """Mixin counting authenticated file reads and writes of a real TemplateStore."""

    reads = 0
    writes = 0

    def _read(self):  # type: ignore[no-untyped-def]
        data = super()._read()  # type: ignore[misc]
        if data is not None:
            self.reads += 1
        return data

    def _commit(self, op, **kw) -> None:  # type: ignore[no-untyped-def]
        self.writes += 1
        super()._commit(op, **kw)  # type: ignore[misc]

    def _write_att(self, op, changes) -> None:  # type: ignore[no-untyped-def]
        self.writes += 1
        super()._write_att(op, changes)  # type: ignore[misc]


def _unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    t = rng.standard_normal((n, dim)).astype(np.float32)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    return t


def _median_ms(times: list[float]) -> float:
    return round(statistics.median(times) * 1000.0, 2)


def run(users: list[int], *, templates: int = 15, repeat: int = 9, parent: Path | None = None) -> list[dict]:
    """Measure every user count in ``users``; returns one dict of timings (ms) per count."""
    from .engine import FaceEngine
    from .store import TemplateStore, UserRecord
    from .unlock import FaceUnlock, fused_score

    class CountingStore(_CountingStore, TemplateStore):
        pass

    engine = FaceEngine(threads=1)  # models load lazily: only the embedder's name and dim are used
    name, dim = engine.embedder_spec.name, engine.embedder_spec.dim
    rng = np.random.default_rng(0)
    rows = []
    for n in users:
        reps = max(3, repeat if n <= 100 else repeat // 2 if n <= 1000 else 3)
        d = Path(tempfile.mkdtemp(prefix="fu-bench-store-", dir=parent))
        try:
            store = CountingStore(d / "bench.fus", key_file=d / "bench.key")
            names = [f"user{i:05d}" for i in range(n)]
            t0 = time.perf_counter()
            store.update_many(None, lambda _: {u: UserRecord(templates=_unit_rows(rng, templates, dim), embedder=name,
                                                              created=time.time()) for u in names})
            build_s = time.perf_counter() - t0
            fu = FaceUnlock(store, engine=engine, liveness=False)
            probe = _unit_rows(rng, 1, dim)[0]

            charge_t, refund_t, match_t = [], [], []
            for i in range(reps):
                user = names[(i * 7919) % n]
                now = time.time()
                t0 = time.perf_counter()
                charge = fu._charge([user], now, check_embedder=True)
                t1 = time.perf_counter()
                gallery = charge.charged[user].templates
                fused_score(gallery, probe)
                t2 = time.perf_counter()
                if fu._refund_grant(charge, user, time.time(), None) is None:
                    raise RuntimeError("bench: the grant refund failed")
                t3 = time.perf_counter()
                charge_t.append(t1 - t0)
                match_t.append(t2 - t1)
                refund_t.append(t3 - t2)

            id_charge, id_refund, id_match, id_rw, id_match_min = [], [], [], [], []
            for i in range(max(3, reps // 3)):
                store.reads = store.writes = 0
                now = time.time()
                t0 = time.perf_counter()
                charge = fu._charge(None, now, check_embedder=False)
                t1 = time.perf_counter()
                cand = sorted(u for u, r in charge.charged.items() if r is not None)
                galleries = [charge.charged[u].templates for u in cand]
                gallery = np.concatenate(galleries)
                owners = np.repeat(np.arange(len(cand)), [len(g) for g in galleries])
                t2 = time.perf_counter()
                for _ in range(5):
                    ta = time.perf_counter()
                    _, k = fused_score(gallery, probe, owners)
                    id_match_min.append(time.perf_counter() - ta)
                t3 = time.perf_counter()
                rw = (store.reads, store.writes)
                if fu._refund_grant(charge, cand[k], time.time(), None) is None:
                    raise RuntimeError("bench: the grant refund failed")
                t4 = time.perf_counter()
                id_charge.append(t1 - t0)
                id_match.append((t3 - t2) / 5)
                id_refund.append(t4 - t3)
                id_rw.append(rw)
                # the others stay charged after a grant, as in identify: lift it so every run starts alike
                store.update_many(None, lambda recs: {u: UserRecord(r.templates, r.embedder, r.created, meta=r.meta)
                                                      for u, r in recs.items() if r is not None and r.failures})
            rows.append({
                "users": n,
                "templates_per_user": templates,
                "file_mb": round(os.path.getsize(store.path) / 1e6, 2),
                "build_s": round(build_s, 2),
                "unlock_store_ms": _median_ms([a + b for a, b in zip(charge_t, refund_t)]),
                "unlock_charge_ms": _median_ms(charge_t),
                "unlock_refund_ms": _median_ms(refund_t),
                "unlock_match_ms_per_frame": _median_ms(match_t),
                "identify_store_ms": _median_ms([a + b for a, b in zip(id_charge, id_refund)]),
                "identify_charge_ms": _median_ms(id_charge),
                "identify_refund_ms": _median_ms(id_refund),
                "identify_match_ms_per_frame": _median_ms(id_match),
                "identify_match_ms_per_frame_min": round(min(id_match_min) * 1000.0, 2),
                "identify_charge_reads_writes": list(max(id_rw)),
                "runs": [reps, len(id_charge)],
            })
        finally:
            shutil.rmtree(d, ignore_errors=True)
    return rows


def _table(rows: list[dict]) -> str:
    head = ("users", "file MB", "unlock store ms (charge+refund)", "unlock match ms/frame",
            "identify store ms (charge+refund)", "identify match ms/frame (min)", "identify charge reads/writes")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(
            f"| {r['users']:,} | {r['file_mb']} | {r['unlock_store_ms']} ({r['unlock_charge_ms']}+{r['unlock_refund_ms']}) "
            f"| {r['unlock_match_ms_per_frame']} | {r['identify_store_ms']} ({r['identify_charge_ms']}+"
            f"{r['identify_refund_ms']}) | {r['identify_match_ms_per_frame']} ({r['identify_match_ms_per_frame_min']}) | "
            f"{r['identify_charge_reads_writes'][0]}/{r['identify_charge_reads_writes'][1]} |"
        )
    return "\n".join(lines)


def _argv(args: argparse.Namespace) -> list[str]:
    out = ["--users", args.users, "--templates", str(args.templates), "--repeat", str(args.repeat)]
    if args.dir is not None:
        out += ["--dir", str(args.dir)]
    if args.json:
        out.append("--json")
    return out


def main(args: argparse.Namespace) -> int:
    """CLI entry: print the table (or JSON). Re-runs itself with one BLAS thread if needed."""
    if any(os.environ.get(v) != "1" for v in _THREAD_VARS):
        env = dict(os.environ, **{v: "1" for v in _THREAD_VARS})
        return subprocess.call([sys.executable, "-m", "faceunlock.bench_store", *_argv(args)], env=env)
    try:
        users = [int(u.replace("_", "")) for u in args.users.split(",") if u.strip()]
    except ValueError:
        print(f"faceunlock: --users must be comma-separated integers, got {args.users!r}", file=sys.stderr)
        return 2
    if not users or min(users) < 1 or args.templates < 1 or args.repeat < 1:
        print("faceunlock: --users, --templates and --repeat must be >= 1", file=sys.stderr)
        return 2
    rows = run(users, templates=args.templates, repeat=args.repeat, parent=args.dir)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(_table(rows))
        print("store ms: real store operations of one granted attempt (a denied attempt costs the charge only); "
              "match ms: fused_score per frame, 1 thread; detection/embedding not included (see `faceunlock bench`)")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="faceunlock bench-store")
    register(ap.add_subparsers(dest="command"))
    ns = ap.parse_args(["bench-store", *sys.argv[1:]])
    sys.exit(main(ns))
