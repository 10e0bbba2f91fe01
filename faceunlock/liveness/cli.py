"""CLI commands of the liveness package (imports stay inside the commands)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

DEFAULT_ROOT = Path("../shared/data/faces-dev/video_liveness")


def cmd_eval_liveness(args) -> int:
    from ..errors import FaceUnlockError

    root = Path(args.root)
    if not (root / "liveportrait_driving").is_dir():
        raise FaceUnlockError(
            f"liveness data not found: {root} has no liveportrait_driving/ folder; "
            "pass the faces-dev video_liveness folder as the first argument"
        )
    from ..engine import FaceEngine
    from ..evaluation import liveness_eval as E
    from . import Liveness

    kw = {} if args.threshold is None else {"threshold": args.threshold}
    live = Liveness(FaceEngine(threads=args.threads), **kw)
    rep = E.evaluate(live, root, lfw=args.lfw, per_source=args.per_source, stride_s=args.stride,
                     challenges=args.challenges, seed=args.seed,
                     say=(lambda s: print(s, file=sys.stderr)) if args.verbose else (lambda s: None))
    print(json.dumps(rep.as_dict(), indent=1) if args.json else rep.text())
    return 0


def register(sub) -> None:
    """Add the liveness sub-commands."""
    p = sub.add_parser("eval-liveness", help="APCER per attack type and BPCER on generated attacks and dev videos")
    p.add_argument("root", type=Path, nargs="?", default=DEFAULT_ROOT,
                   help=f"the faces-dev video_liveness folder (default {DEFAULT_ROOT})")
    p.add_argument("--lfw", type=int, default=12, help="LFW dev portraits used as extra attack sources")
    p.add_argument("--per-source", type=int, default=1, help="attacks of each kind per source portrait")
    p.add_argument("--stride", type=float, default=0.5, help="hop between 3 s bona fide windows, seconds")
    p.add_argument("--challenges", type=int, default=20, help="random challenges run against each replay")
    p.add_argument("--threshold", type=float, default=None, help="passive threshold (default: the shipped one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    p.set_defaults(func=cmd_eval_liveness)
