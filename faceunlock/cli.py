"""The ``faceunlock`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]


def _engine(args):
    from .engine import FaceEngine

    return FaceEngine(threads=getattr(args, "threads", None) or 1)


def cmd_demo(args) -> int:
    from . import demo

    return demo.run(_engine(args))


def cmd_eval_pairs(args) -> int:
    from .errors import FaceUnlockError
    from .evaluation import pairs as P
    from .evaluation.metrics import VerificationReport
    from .image import load_image

    pair_list = P.read_pairs(args.pairs)
    engine = _engine(args)

    def ours(path: Path):
        try:
            return engine.template(load_image(path))
        except FaceUnlockError:
            return None

    reports = [P.evaluate("faceunlock (BlazeFace + mesh + dlib ResNet fp16, LiteRT)", pair_list, args.image_root, ours,
                          lambda a, b: float(a @ b))]
    if args.dlib:
        from .evaluation.dlib_native import DlibNative, available

        if available():
            dn = DlibNative()
            reports.append(P.evaluate("dlib-native (HOG + 5-point + ResNet, dlib-bin)", pair_list, args.image_root,
                                      lambda p: dn.template(load_image(p)), DlibNative.score))
        else:
            print("dlib-bin not installed: skipping the dlib-native pipeline", file=sys.stderr)
    if args.json:
        print(json.dumps([r.__dict__ for r in reports], indent=1))
    else:
        print(f"{len(pair_list)} pairs from {args.pairs}; failures to acquire are scored as rejections")
        print(VerificationReport.header())
        for r in reports:
            print(r.row())
    return 0


def cmd_calibrate(args) -> int:
    from .evaluation import calibrate as C

    engine = _engine(args)
    ts, g, i, rows = C.run(engine, args.roots, tuple(args.exclude), args.pad)
    if args.json:
        print(json.dumps({"images": len(ts.paths), "failures": [str(p) for p in ts.failures],
                          "genuine_pairs": int(g.size), "impostor_pairs": int(i.size),
                          "rows": [r.__dict__ for r in rows]}, indent=1))
        return 0
    print(f"{len(ts.paths)} images ({len(ts.failures)} without a face) in {len(set(ts.identities))} identities; "
          f"{g.size:,} genuine and {i.size:,} impostor pairs; {ts.seconds:.1f} s")
    print("| target FAR | threshold | false accepts | FRR at it |\n|---|---|---|---|")
    for r in rows:
        print(r.line())
    print(f"embedder {engine.embedder_spec.name}: shipped strong threshold {engine.threshold:.4f}, "
          f"convenience {engine.embedder_spec.convenience_threshold:.4f}")
    return 0


def cmd_eval_unlock(args) -> int:
    from .evaluation import unlock_eval
    from .policy import Policy

    engine = _engine(args)
    policy = Policy(level=args.level, enroll_min_templates=args.enroll, enroll_max_templates=max(args.enroll, 5),
                    min_face_px=args.min_face_px, min_sharpness=args.min_sharpness, lockout_after=10**9, permanent_after=None)
    r = unlock_eval.evaluate(engine, args.image_roots, enroll_k=args.enroll, policy=policy,
                             exclude=tuple(args.exclude), pad=args.pad)
    print(json.dumps(r.as_dict(), indent=1) if args.json else r.text())
    return 0


def cmd_bench(args) -> int:
    from . import bench

    return bench.main(args)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="faceunlock", description="On-device face unlock: nothing leaves the device.")
    ap.add_argument("--version", action="store_true", help="print the version and exit")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="enrol a bundled portrait and show a match and a rejection")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("eval-pairs", help="verification accuracy on an LFW-format pair list")
    p.add_argument("pairs", type=Path)
    p.add_argument("image_root", type=Path)
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-dlib", dest="dlib", action="store_false", help="skip the dlib-native comparison")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_eval_pairs)

    p = sub.add_parser("calibrate", help="similarity thresholds for target false-accept rates from labelled folders")
    p.add_argument("roots", type=Path, nargs="+", help="folders of identity sub-folders")
    p.add_argument("--exclude", action="append", default=[], help="sub-folder name to skip (repeatable)")
    p.add_argument("--pad", type=float, default=0.3, help="replicated border around each image, fraction of its size")
    p.add_argument("--json", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("eval-unlock", help="FRR and FAR per unlock attempt on labelled image folders")
    p.add_argument("image_roots", type=Path, nargs="+", help="folders of identity sub-folders")
    p.add_argument("--enroll", type=int, default=3, help="images per identity used to enrol (K)")
    p.add_argument("--level", choices=["strong", "convenience"], default="strong")
    p.add_argument("--min-face-px", type=int, default=40, help="enrolment face-size gate (the dev photos are small)")
    p.add_argument("--min-sharpness", type=float, default=15.0, help="enrolment sharpness gate (the policy default)")
    p.add_argument("--exclude", action="append", default=[], help="sub-folder name to skip (repeatable)")
    p.add_argument("--pad", type=float, default=0.3, help="replicated border around each image, fraction of its size")
    p.add_argument("--json", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_eval_unlock)

    p = sub.add_parser("bench", help="per-stage latency, cold start and memory (and dlib-native when installed)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--frames", type=Path, help="folder of images to time (default: a bundled 640x480 frame)")
    p.add_argument("--repeat", type=int, default=100, help="timed runs per frame")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-dlib", dest="dlib", action="store_false", help="skip the dlib-native comparison")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed (default: report only)")
    p.add_argument("--cold-runs", type=int, default=3, help="fresh processes timed for the cold start (median)")
    p.set_defaults(func=cmd_bench)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        ap.print_help()
        return 2
    from .errors import FaceUnlockError

    try:
        return int(args.func(args) or 0)
    except FaceUnlockError as exc:
        print(f"faceunlock: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
