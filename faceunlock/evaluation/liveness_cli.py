"""The ``faceunlock eval-liveness`` command (imports stay inside the command)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

DEFAULT_DEV = Path("../shared/data/faces-dev/video_liveness")
DEFAULT_DEV2 = Path("../shared/data/faces-dev2")
# generator source portraits (defaults; liveness_eval uses the same): ≈ 5 s of CPU per portrait
GENERATOR_LFW = 80  # LFW identities, one image each (of lfw_dev's 202)
GENERATOR_CASIA = 20  # CASIA-FaceV5 subjects of faces-dev2, one image each


def add_dev_arguments(p) -> None:
    """The dev-data arguments that eval-liveness and eval-attention share: the faces-dev
    video_liveness folder and --dev2 (either '' to skip)."""
    p.add_argument("root", nargs="?", default=str(DEFAULT_DEV),
                   help=f"the faces-dev video_liveness folder (default {DEFAULT_DEV}; '' to skip)")
    p.add_argument("--dev2", default=str(DEFAULT_DEV2), help=f"the faces-dev2 folder (default {DEFAULT_DEV2}; '' to skip)")


def dev_roots(args) -> tuple[Path | None, Path | None]:
    """(faces-dev video_liveness folder, faces-dev2 folder) from :func:`add_dev_arguments`'
    arguments, each None when skipped; a folder that is not the expected one is an error."""
    from ..errors import FaceUnlockError

    dev = Path(args.root) if args.root else None
    dev2 = Path(args.dev2) if args.dev2 else None
    if dev is not None and not (dev / "liveportrait_driving").is_dir():
        raise FaceUnlockError(f"liveness data not found: {dev} has no liveportrait_driving/ folder; "
                              "pass the faces-dev video_liveness folder as the first argument")
    if dev2 is not None and not (dev2 / "videos" / "videos.csv").is_file():
        raise FaceUnlockError(f"faces-dev2 not found: {dev2} has no videos/videos.csv; pass --dev2 DIR or --dev2 ''")
    return dev, dev2


def cmd_eval_liveness(args) -> int:
    from ..errors import FaceUnlockError

    dev, dev2 = dev_roots(args)
    from ..engine import FaceEngine
    from ..liveness import Liveness
    from . import liveness_eval as E

    engine = FaceEngine(threads=args.threads)
    kw = {} if args.threshold is None else {"threshold": args.threshold}
    live = Liveness(engine, **kw)
    say = (lambda s: print(s, file=sys.stderr, flush=True)) if args.verbose else (lambda s: None)
    lfw_n, lfw_root = (int(args.lfw), None) if str(args.lfw).isdigit() else (args.lfw_n, Path(args.lfw))
    if lfw_root is not None and not lfw_root.is_dir():
        raise FaceUnlockError(f"--lfw: {lfw_root} is neither a number nor a folder of LFW identity folders")
    rep = E.evaluate(live, dev, dev2, lfw=lfw_n, lfw_root=lfw_root, casia=args.casia, seed=args.seed,
                     cache_dir=args.cache, say=say)
    urep = None if args.no_unlock else E.evaluate_unlock(dev, dev2, engine=engine, max_attempts=args.attempts, say=say)
    if args.json:
        out = rep.as_dict()
        if urep is not None:
            out["unlock"] = {"attempts": urep.attempts, "enrol_failures": urep.enrol_failures, "seconds": urep.seconds}
        print(json.dumps(out, indent=1, default=float))
    else:
        print(rep.text())
        if urep is not None:
            print(f"\nFaceUnlock default policy (enrol from a clip's first 3 s, unlock from its next 3-s windows; "
                  f"{urep.seconds:.0f} s):")
            print(urep.text())
    return 0


def register(sub) -> None:
    """Add the eval-liveness sub-command."""
    p = sub.add_parser("eval-liveness", help="BPCER per motion class and APCER per attack source on the dev data "
                       "(new texture check beside the 0.1.0 parallax check), and FaceUnlock FRR/time to grant")
    add_dev_arguments(p)
    p.add_argument("--lfw", default=str(GENERATOR_LFW),
                   help="LFW portraits used as generator attack sources (one image per identity): a number "
                        f"(default {GENERATOR_LFW}; taken from the lfw_dev/images folder beside the faces-dev root) "
                        "or an LFW images folder (then --lfw-n of its identities)")
    p.add_argument("--lfw-n", type=int, default=GENERATOR_LFW,
                   help=f"identities taken when --lfw is a folder (default {GENERATOR_LFW}; ≈ 5 s of CPU per portrait, 4 attacks)")
    p.add_argument("--casia", type=int, default=GENERATOR_CASIA,
                   help=f"faces-dev2 CASIA-FaceV5 subjects used as generator attack sources (default {GENERATOR_CASIA}; 0 to skip)")
    p.add_argument("--threshold", type=float, default=None, help="texture threshold (default: the shipped one)")
    p.add_argument("--attempts", type=int, default=5, help="unlock attempts per clip after enrolment")
    p.add_argument("--no-unlock", action="store_true", help="skip the FaceUnlock part")
    p.add_argument("--cache", type=Path, default=None,
                   help="cache per-frame records here (development; reruns then skip the models)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    p.set_defaults(func=cmd_eval_liveness)
