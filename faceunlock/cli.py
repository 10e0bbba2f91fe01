"""The ``faceunlock`` command line."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

__all__ = ["main"]


def _engine(args):
    from .engine import FaceEngine

    return FaceEngine(threads=getattr(args, "threads", None) or 1, embedder=getattr(args, "embedder", None))


def cmd_demo(args) -> int:
    from . import demo

    return demo.run(_engine(args), display=args.display, challenge=getattr(args, "challenge", False))


def cmd_eval_pairs(args) -> int:
    from .errors import FaceUnlockError
    from .evaluation import pairs as P
    from .evaluation.metrics import VerificationReport
    from .image import load_image

    from .engine import FaceEngine

    pair_list = P.read_pairs(args.pairs)
    reports = []
    from .embed import SHIPPED_EMBEDDERS

    for name in args.embedders or list(SHIPPED_EMBEDDERS):  # one row per --embedder (default: every shipped one)
        engine = FaceEngine(threads=args.threads or 1, embedder=name)

        def ours(path: Path, engine=engine):
            try:
                img = load_image(path)
                faces = engine.detect(img)
            except FaceUnlockError:
                return None
            k = P.pick_face([f.box for f in faces], img.shape[1], img.shape[0], args.face)
            return None if k is None else engine.face_template(img, faces[k])

        label = engine.embedder_spec.name
        label = "dlib ResNet fp16" if label == "dlib-resnet-v1" else label
        reports.append(P.evaluate(f"faceunlock (BlazeFace + mesh + {label}, LiteRT)", pair_list, args.image_root,
                                  ours, lambda a, b: float(a @ b)))
    if args.dlib:
        from .evaluation.dlib_native import DlibNative, available

        if available():
            dn = DlibNative()
            reports.append(P.evaluate("dlib-native (HOG + 5-point + ResNet, dlib-bin)", pair_list, args.image_root,
                                      lambda p: dn.template(load_image(p), args.face), DlibNative.score))
        else:
            print("dlib-bin not installed: skipping the dlib-native pipeline", file=sys.stderr)
    if args.json:
        print(json.dumps([r.__dict__ for r in reports], indent=1))
    else:
        n_imp = sum(not p.same for p in pair_list)
        print(f"{len(pair_list)} pairs from {args.pairs}; the {args.face} face of each image; "
              f"failures to acquire are scored as rejections; "
              f"with {n_imp} different-person pairs, TAR @ FAR 1e-3 is taken above the highest impostor score")
        print(VerificationReport.header())
        for r in reports:
            print(r.row())
    return 0


def cmd_calibrate(args) -> int:
    from .evaluation import calibrate as C

    if args.by_group:  # per-group FAR on the dev data's tuning/reporting halves (calibrate.by_group)
        from .embed import SHIPPED_EMBEDDERS, resolve_embedder

        specs = [resolve_embedder(args.embedder)] if args.embedder else list(SHIPPED_EMBEDDERS.values())
        res = C.by_group(specs, args.shared, args.cache, threads=args.threads or 1)
        print(json.dumps([r.as_dict() for r in res], indent=1) if args.json else "\n\n".join(r.text() for r in res))
        return 0
    if not args.roots:
        raise SystemExit("faceunlock calibrate: give image ROOTS, or --by-group")
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
    from .decision import DEFAULT_RULE, SINGLE_FRAME, FrameRule
    from .engine import FaceEngine
    from .evaluation import unlock_eval
    from .policy import Policy

    policy = Policy(level=args.level, enroll_min_templates=args.enroll, enroll_max_templates=max(args.enroll, 5),
                    min_face_px=args.min_face_px, min_sharpness=args.min_sharpness, lockout_after=10**9, permanent_after=None)
    engines = [FaceEngine(threads=args.threads or 1, embedder=name) for name in (args.embedders or [None])]
    if args.dev is None and not args.image_roots:
        print("eval-unlock: give image folders, or --dev DATA (the folder holding faces-dev and faces-dev2)", file=sys.stderr)
        return 2
    if args.dev is not None:
        try:
            rules = [FrameRule(*(int(v) for v in r.split("/"))) for r in args.rules] or [SINGLE_FRAME, DEFAULT_RULE]
        except (TypeError, ValueError):
            print(f"eval-unlock: --rule takes K/N with 1 <= K <= N, got {args.rules}", file=sys.stderr)
            return 2
        log = (lambda m: print(m, file=sys.stderr, flush=True)) if args.verbose else None
        ev = unlock_eval.evaluate_dev(engines, args.dev, rules=rules, enroll_k=args.enroll, policy=policy,
                                      videos=args.videos, photos=args.photos, max_windows=args.max_windows,
                                      cache=args.cache, log=log)
        print(json.dumps(ev.as_dict(), indent=1) if args.json else ev.text())
        return 0
    results = [unlock_eval.evaluate(e, args.image_roots, enroll_k=args.enroll, policy=policy,
                                    exclude=tuple(args.exclude), pad=args.pad) for e in engines]
    if args.json:
        print(json.dumps([dict(r.as_dict(), embedder=e.embedder_spec.name) for r, e in zip(results, engines)], indent=1))
    else:
        print("\n\n".join(f"[{e.embedder_spec.name}]\n{r.text()}" for r, e in zip(results, engines)))
    return 0


def cmd_bench(args) -> int:
    from . import bench

    return bench.main(args)


# ---------------------------------------------------------------------------- device commands
# enroll / unlock / users / remove / reset-lockout / store: the store is --store (default
# faceunlock.store.default_store_path()), its key file --key-file (default
# default_key_path(store)). Exit codes: 0 success (unlock: granted), 1 a clean "no"
# (denied, not enrolled), 2 an error (missing source, unreadable store, bad arguments).


def _err(text: str) -> None:
    """One line on stderr; never raises (stderr may be closed or a broken pipe)."""
    err = sys.stderr
    if err is None:
        return
    try:
        err.write(text + "\n")
        err.flush()
    except Exception:
        pass


def _out(text: str) -> bool:
    """Print ``text`` on stdout; never raises. A closed or broken stdout is pointed at
    /dev/null (so the interpreter's final flush cannot fail either) and False returned:
    the command's exit code stays what its result says."""
    out = sys.stdout
    if out is None:
        return False
    try:
        out.write(text + "\n")
        out.flush()
        return True
    except Exception:
        _silence_stdout()
        return False


def _silence_stdout() -> None:
    import os

    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except Exception:
        pass


def _store_path(args) -> Path:
    from .errors import StoreError
    from .store import default_store_path

    if getattr(args, "store", None):
        return Path(args.store).expanduser()
    try:
        return default_store_path()
    except (RuntimeError, KeyError, OSError) as exc:  # no HOME and no passwd entry
        raise StoreError(f"cannot find the default store ({exc}): set HOME or XDG_DATA_HOME, or pass --store") from None


def _exists(path: Path, what: str) -> bool:
    """``path.exists()`` that turns a permission error into a one-line StoreError."""
    from .errors import StoreError

    try:
        return path.exists()
    except OSError as exc:
        raise StoreError(f"cannot access the {what} {path}: {exc.strerror or exc} "
                         "(another user's store? run as its owner, or pass --store)") from None


def _key_path(args, store_path: Path) -> Path:
    from .store import default_key_path

    if getattr(args, "key_file", None):
        return Path(args.key_file).expanduser()
    return default_key_path(store_path)


def _check_store_path(path: Path) -> None:
    from .errors import StoreError

    try:
        is_dir = path.is_dir()
    except OSError as exc:
        raise StoreError(f"cannot access the store {path}: {exc.strerror or exc}") from None
    if is_dir:
        raise StoreError(f"--store {path} is a directory: name a store file, e.g. {path / 'default.fus'}")


def _open_store(args, *, create: bool = False):
    """The store named by --store/--key-file. A missing store file is an error unless
    ``create`` (enrolment makes it)."""
    from .errors import StoreError
    from .store import TemplateStore

    path = _store_path(args)
    _check_store_path(path)
    if not create and not _exists(path, "store"):
        raise StoreError(f"no template store at {path}: enrol a user first (faceunlock enroll USER), "
                         "or pass --store")
    key_file = _key_path(args, path)
    _exists(key_file, "key file")
    return TemplateStore(path, key_file=key_file, create=create)


def _writable_location(path: Path, what: str) -> None:
    """Raise StoreError unless ``path`` can be created or replaced: its nearest existing
    directory must be writable and searchable (checked before any frame is captured)."""
    import os

    from .errors import StoreError

    import tempfile

    d = path.parent
    try:
        while not d.exists():
            if d.parent == d:
                break
            d = d.parent
        ok = d.is_dir() and os.access(d, os.W_OK | os.X_OK)
        if ok:  # root passes os.access everywhere: a real probe file (removed at once)
            fd, probe = tempfile.mkstemp(prefix=".faceunlock-probe-", dir=d)
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise StoreError(f"cannot write the {what} {path}: {d}: {exc.strerror or exc} "
                         "(pass --store/--key-file to a place you can write)") from None
    if not ok:
        raise StoreError(f"cannot write the {what} {path}: {d} is not a writable directory "
                         "(pass --store/--key-file to a place you can write)")


def _policy(args, **overrides):
    from .policy import Policy

    kw = {}
    if getattr(args, "level", None):
        kw["level"] = args.level
    if getattr(args, "min_face_px", None):
        kw["min_face_px"] = args.min_face_px
    kw.update(overrides)
    return Policy(**kw)


def _unlocker(args, store, policy=None, user: str | None = None):
    """FaceUnlock with the library's default liveness setting unless --no-liveness. For an
    enrolled ``user`` without --embedder, the engine uses the embedder that made their
    templates."""
    from .unlock import FaceUnlock

    kw = {}
    if getattr(args, "no_liveness", False):
        kw["liveness"] = False
    if user is not None and not getattr(args, "embedder", None):
        rec = store.get(user)
        if rec is not None:
            from .embed import embedder_for_record

            args.embedder = embedder_for_record(rec.embedder)  # a stored name, never a path
    return FaceUnlock(store, engine=_engine(args), policy=policy or _policy(args), **kw)


def _open_source(args, **limits):
    from . import camera

    source = getattr(args, "source", None)
    if source is None or str(source).strip() == "":
        source = "0"
    return camera.open(source, skip_s=getattr(args, "skip", 0.0) or 0.0, **limits)


def _strict_json(value):
    """``value`` with every non-finite float (a permanent lock's ``inf``) as ``null``: the
    JSON standard has no Infinity or NaN, and strict parsers reject Python's spelling."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    return value


def _dumps(payload) -> str:
    """Strict JSON (RFC 8259) for --json output."""
    return json.dumps(_strict_json(payload), indent=1, default=str, allow_nan=False)


def _emit(args, payload: dict, text: str) -> None:
    """The command's result on stdout (JSON with --json); a closed stdout never raises."""
    _out(_dumps(payload) if args.json else text)


def _warn_no_liveness(args) -> None:
    if getattr(args, "no_liveness", False):
        _err("faceunlock: warning: --no-liveness: a photo or a screen showing the user's face can unlock; "
             "use it for stills and tests only")


class _Guide:
    """Enrolment guidance on stderr: a progress bar of poses captured and the latest advice."""

    def __init__(self, needed: int, most: int, quiet: bool) -> None:
        self.needed, self.most, self.quiet = needed, most, quiet
        try:
            self.tty = sys.stderr is not None and sys.stderr.isatty()
        except Exception:
            self.tty = False
        if sys.stderr is None:
            self.quiet = True
        self.last = None

    def __call__(self, accepted: int, needed: int, quality) -> None:
        if self.quiet:
            return
        advice = quality.problem or "good: turn your head slowly left, right, up and down"
        width = 20
        filled = int(round(width * min(accepted, self.most) / self.most))
        ok = "ready" if accepted >= self.needed else f"need {self.needed}"
        line = f"[{'#' * filled}{'.' * (width - filled)}] poses captured {accepted}/{self.most} ({ok}) - {advice}"
        try:
            if self.tty:
                print("\r" + line[:150].ljust(150), end="", file=sys.stderr, flush=True)
            elif (accepted, quality.problem) != self.last:
                print(line, file=sys.stderr)
        except Exception:  # a closed stderr must not end the enrolment
            self.quiet = True
        self.last = (accepted, quality.problem)

    def done(self) -> None:
        if self.tty and not self.quiet and self.last is not None:
            _err("")


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _drop_orphan_key(path: Path, key_file: Path, created: tuple[int, int] | None, exc: BaseException) -> None:
    """After a failed enrolment: remove the key file this run created (``created``: its
    device and inode) when no store file was written — it seals nothing; otherwise name
    it in the error message."""
    from .errors import FaceUnlockError

    if created is None:
        return
    try:
        if not path.exists() and _file_id(key_file) == created:
            key_file.unlink()
            return
    except OSError:
        pass
    if isinstance(exc, FaceUnlockError) and key_file.exists():
        exc.args = (f"{exc} (the store's key file is {key_file})",)


def cmd_enroll(args) -> int:
    # Everything that can fail without a face is checked before the first frame is read:
    # the store and key locations must be writable, the source must open.
    path = _store_path(args)
    _check_store_path(path)
    key_file = _key_path(args, path)
    store_existed, key_existed = _exists(path, "store"), _exists(key_file, "key file")
    if not store_existed:
        _writable_location(path, "store")
    if not key_existed:
        _writable_location(key_file, "key file")
    created = None  # (dev, inode) of a key file this run creates
    try:
        store = _open_store(args, create=True)
        if not key_existed:
            created = _file_id(key_file)
        policy = _policy(args)
        fu = _unlocker(args, store, policy)
        guide = _Guide(policy.enroll_min_templates, policy.enroll_max_templates, args.quiet or args.json)
        try:
            with _open_source(args, max_seconds=args.seconds) as cam:
                if not (args.quiet or args.json):
                    _err(f"enrolling {args.user!r} from {args.source}: look at the camera and turn your head slowly")
                report = fu.enroll(args.user, cam.images(), progress=guide, append=args.append)
        finally:
            guide.done()
    except BaseException as exc:
        # A failed first enrolment leaves no store behind: a key file this run created
        # then seals nothing, so it is removed rather than left in the key directory.
        _drop_orphan_key(path, key_file, created, exc)
        raise
    payload = {"user": report.user, "templates": report.templates, "frames_seen": report.frames_seen,
               "frames_accepted": report.frames_accepted, "rejected": report.rejected, "poses": report.poses,
               "store": str(store.path), "key_file": str(key_file)}
    _emit(args, payload, f"enrolled {report.user!r}: {report.templates} templates from {report.frames_accepted} "
          f"good frames of {report.frames_seen} (store {store.path}, key file {key_file})")
    return 0


def cmd_unlock(args) -> int:
    store = _open_store(args)
    _warn_no_liveness(args)
    # The attempt's limit (policy.timeout_s) runs on the frames' own timestamps (camera
    # time), so a recording is judged exactly as a live camera showing it would be.
    fu = _unlocker(args, store, None, args.user)
    fu._usable_threshold()  # an uncalibrated imported model: a clear error before the camera opens
    challenge = _challenge_for(args, fu)
    with _open_source(args, max_seconds=args.seconds) as cam:
        frames = cam.timed() if fu.liveness else cam.images()
        if challenge is not None:
            from .liveness.challenge import prompted

            frames = prompted(frames, challenge, lambda text: print(f"challenge: {text}", file=sys.stderr, flush=True))
        r = fu.unlock(args.user, frames, challenge=challenge)
    verdict = getattr(r, "liveness", None)
    payload = {"user": args.user, "granted": r.granted, "reason": r.reason.value, "score": r.score,
               "threshold": fu.threshold, "frames_used": r.frames_used, "elapsed_ms": round(r.elapsed_ms, 1),
               "attempts_left": r.attempts_left, "locked_until": r.locked_until,
               "locked_permanently": r.locked_until == float("inf"),
               "liveness": None if verdict is None else {"live": verdict.live, "score": verdict.score,
                                                         "reason": verdict.reason, "threshold": verdict.threshold},
               "liveness_checked": bool(fu.liveness), "hint": getattr(r, "hint", None)}
    score = "no face compared" if r.score is None else f"score {r.score:.4f} (threshold {fu.threshold:.4f})"
    if verdict is not None:
        score += f", liveness {verdict.score:.3f} ({verdict.reason})"
    if r.granted:
        text = f"granted: {args.user!r}, {score}, {r.frames_used} frame(s), {r.elapsed_ms:.0f} ms"
    else:
        text = f"denied ({r.reason.value}): {score}, {r.frames_used} frame(s), {r.elapsed_ms:.0f} ms"
        if r.locked_until is not None:
            text += "; locked out " + ("until reset-lockout" if r.locked_until == float("inf") else
                                       f"for {max(0.0, r.locked_until - time.time()):.0f} s")
        elif r.reason.value in ("no_match", "liveness_failed"):
            text += f"; {r.attempts_left} attempt(s) before lockout"
        if getattr(r, "hint", None):
            text += f"; hint: {r.hint}"
    _emit(args, payload, text)
    return 0 if r.granted else 1


def _challenge_for(args, fu):
    """A random liveness challenge when --challenge was given (needs liveness on)."""
    if not getattr(args, "challenge", False):
        return None
    if not fu.liveness:
        from .errors import FaceUnlockError

        raise FaceUnlockError("--challenge needs the liveness check: drop --no-liveness")
    return fu.liveness.new_challenge()


def cmd_users(args) -> int:
    import time

    from .policy import lockout_status

    path = _store_path(args)
    rows = []
    store = _open_store(args)  # a missing store is an error (exit 2), as for unlock
    policy = _policy(args)
    for name, rec in store.records().items():  # one read of the store, not one per user
        locked, until = lockout_status(rec, time.time(), policy)
        rows.append({"user": name, "templates": int(rec.templates.shape[0]), "embedder": rec.embedder,
                     "created": rec.created, "failures": rec.failures, "locked": locked,
                     "locked_until": until, "locked_permanently": until == float("inf")})
    if args.json:
        _out(_dumps({"store": str(path), "users": rows}))
    elif not rows:
        _out(f"no users enrolled (store {path})")
    else:
        _out("\n".join(f"{r['user']}\t{r['templates']} templates\t{r['embedder']}\tfailures {r['failures']}"
                       + (" LOCKED" if r["locked"] else "") for r in rows))
    return 0


def cmd_remove(args) -> int:
    store = _open_store(args)
    gone = store.remove(args.user)
    _emit(args, {"user": args.user, "removed": gone},
          f"removed {args.user!r} and all their templates" if gone else f"{args.user!r} is not enrolled")
    return 0 if gone else 1


def cmd_reset_lockout(args) -> int:
    from . import policy as pol

    store = _open_store(args)
    rec = store.update(args.user, lambda r: pol.reset_lockout(r) if r else None)
    ok = rec is not None
    _emit(args, {"user": args.user, "reset": ok},
          f"lockout of {args.user!r} lifted" if ok else f"{args.user!r} is not enrolled")
    return 0 if ok else 1


def cmd_store(args) -> int:
    store = _open_store(args)
    if args.action == "verify":
        n = store.verify()
        _emit(args, {"store": str(store.path), "ok": True, "users": n},
              f"{store.path}: authenticated, {n} user(s), every record decrypts")
        return 0
    from .store import default_key_path

    current = Path(args.key_file).expanduser() if getattr(args, "key_file", None) else default_key_path(store.path)
    target = Path(args.new_key_file).expanduser() if args.new_key_file else current
    store.rekey(key_file=target)  # the current key file is rotated in place; a new one must not exist
    n = store.verify()
    _emit(args, {"store": str(store.path), "rekeyed": True, "users": n, "key_file": str(target)},
          f"{store.path}: re-sealed {n} user(s) under a new random key in {target}")
    return 0


def cmd_doctor(args) -> int:
    from . import doctor

    return doctor.run(args)


def _device_options() -> argparse.ArgumentParser:
    """--store / --key-file / --json accepted after the command too (before it, they are global)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--store", default=argparse.SUPPRESS, help="template store file (default: see 'faceunlock doctor')")
    p.add_argument("--key-file", default=argparse.SUPPRESS, help="key file of the store (default: beside the data dir)")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    return p


def _add_device_commands(sub) -> None:
    common = _device_options()
    src_help = ("frame source: camera index (0), /dev/videoN, picamera, a video file or a folder of images "
                "(default 0)")

    p = sub.add_parser("enroll", parents=[common], help="enrol USER from a camera, video or image folder")
    p.add_argument("user")
    p.add_argument("--source", default="0", help=src_help)
    p.add_argument("--seconds", type=float, default=20.0, help="stop reading a live camera after this long (20)")
    p.add_argument("--skip", type=float, default=0.0, help="files: seconds of the recording to skip first")
    p.add_argument("--append", action="store_true", help="add templates to the user's existing ones")
    p.add_argument("--embedder", help="embedder name or spec path (default mobilefacenet-v1; see `faceunlock models list`); "
                   "unlock then uses the same one automatically")
    p.add_argument("--min-face-px", type=int, help="face-size gate in pixels (policy default 80)")
    p.add_argument("--quiet", action="store_true", help="no live guidance on stderr")
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser("unlock", parents=[common], help="try to unlock as USER: exit 0 granted, 1 denied, 2 error")
    p.add_argument("user")
    p.add_argument("--source", default="0", help=src_help)
    p.add_argument("--skip", type=float, default=0.0,
                   help="files: seconds of the recording to skip first (the attempt reads from there on)")
    p.add_argument("--seconds", type=float, default=10.0, help="stop reading a live camera after this long (10)")
    p.add_argument("--level", choices=["strong", "convenience"], help="match threshold level (default strong)")
    p.add_argument("--no-liveness", action="store_true",
                   help="skip the liveness check (stills and tests only: a photo can then unlock)")
    p.add_argument("--challenge", action="store_true",
                   help="step-up: also answer 2-3 random prompts (turn, look up, blink) shown on stderr")
    p.set_defaults(func=cmd_unlock)

    p = sub.add_parser("users", parents=[common], help="list enrolled users")
    p.set_defaults(func=cmd_users)

    p = sub.add_parser("remove", parents=[common], help="delete USER and all their templates")
    p.add_argument("user")
    p.set_defaults(func=cmd_remove)

    p = sub.add_parser("reset-lockout", parents=[common], help="lift USER's lockout (after a password/PIN)")
    p.add_argument("user")
    p.set_defaults(func=cmd_reset_lockout)

    p = sub.add_parser("store", parents=[common], help="store maintenance: verify | rekey")
    p.add_argument("action", choices=["verify", "rekey"])
    p.add_argument("--new-key-file", help="rekey: write the new key here (default: rotate the current key file)")
    p.set_defaults(func=cmd_store)

    p = sub.add_parser("doctor", parents=[common],
                       help="check runtime, model checksums, cameras, store/key permissions, versions")
    p.add_argument("--no-camera", action="store_true", help="do not open cameras")
    p.set_defaults(func=cmd_doctor)

    from . import pam

    pam.register(sub, common)


def _labelled_folder_options(p: argparse.ArgumentParser) -> None:
    """Options shared by the commands that read labelled identity folders."""
    p.add_argument("--exclude", action="append", default=[], help="sub-folder name to skip (repeatable)")
    p.add_argument("--pad", type=float, default=0.3, help="replicated border around each image, fraction of its size")
    p.add_argument("--json", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--embedder", help="embedder name or spec path (default mobilefacenet-v1; see `faceunlock models list`)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="faceunlock", description="On-device face unlock: nothing leaves the device.")
    ap.add_argument("--version", action="store_true", help="print the version and exit")
    ap.add_argument("--store", help="template store file (default: $XDG_DATA_HOME/faceunlock/store/default.fus; "
                    "root: /var/lib/faceunlock/store/default.fus)")
    ap.add_argument("--key-file", help="key file of the store (default: <data>/faceunlock/keys/<store>-<hash>.key)")
    ap.add_argument("--json", dest="global_json", action="store_true", help="machine-readable output")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="simulated camera: the owner granted, a printed photo and an impostor denied")
    p.add_argument("--display", action=argparse.BooleanOptionalAction, default=None,
                   help="show an OpenCV window (default: when $DISPLAY is set and OpenCV has a GUI)")
    p.add_argument("--challenge", action="store_true",
                   help="step-up: every attempt must also answer random head-move prompts")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("eval-pairs", help="verification accuracy on an LFW-format pair list")
    p.add_argument("pairs", type=Path)
    p.add_argument("image_root", type=Path)
    p.add_argument("--json", action="store_true")
    p.add_argument("--face", choices=["largest", "centre"], default="largest",
                   help="which face of an image is scored: the largest (what FaceEngine.template uses) "
                        "or the one nearest the centre (LFW centres the named person)")
    p.add_argument("--no-dlib", dest="dlib", action="store_false", help="skip the dlib-native comparison")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--embedder", dest="embedders", action="append", default=[],
                   help="embedder name or spec path (repeatable: one row each; default: every shipped embedder)")
    p.set_defaults(func=cmd_eval_pairs)

    p = sub.add_parser("calibrate", help="similarity thresholds for target false-accept rates from labelled folders")
    p.add_argument("roots", type=Path, nargs="*", help="folders of identity sub-folders (not with --by-group)")
    p.add_argument("--by-group", action="store_true",
                   help="per-group FAR/FRR on the dev data (../shared/data) split by person into tuning and "
                        "reporting halves; thresholds set by the worst-served group (default: every shipped embedder)")
    p.add_argument("--shared", type=Path, help="folder holding faces-dev and faces-dev2 (with --by-group)")
    p.add_argument("--cache", type=Path, help="cache landmarks and templates here (with --by-group)")
    _labelled_folder_options(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("eval-unlock", help="FRR and FAR per unlock attempt: labelled image folders, or (--dev) "
                                           "the dev videos and photo sets per group and source, both halves")
    p.add_argument("image_roots", type=Path, nargs="*", help="folders of identity sub-folders")
    p.add_argument("--dev", type=Path, metavar="DATA",
                   help="folder holding faces-dev and faces-dev2 (e.g. ../shared/data): video attempts and photo "
                        "sets per group and source, tuning and reporting halves, liveness verdict left out")
    p.add_argument("--rule", dest="rules", action="append", default=[], metavar="K/N",
                   help="frame rule to replay on the video attempts, k of the last n face frames (repeatable; "
                        "default: 1/1 and the shipped rule)")
    p.add_argument("--no-videos", dest="videos", action="store_false", help="--dev: skip the videos")
    p.add_argument("--no-photos", dest="photos", action="store_false", help="--dev: skip the photo sets")
    p.add_argument("--max-windows", type=int, default=20, help="--dev: attempts per video at most")
    p.add_argument("--cache", type=Path, help="--dev: folder to keep templates in between runs")
    p.add_argument("--verbose", action="store_true", help="progress on stderr")
    p.add_argument("--enroll", type=int, default=3, help="images per identity used to enrol (K)")
    p.add_argument("--level", choices=["strong", "convenience"], default="strong")
    p.add_argument("--min-face-px", type=int, default=40, help="enrolment face-size gate (the dev photos are small)")
    p.add_argument("--min-sharpness", type=float, default=15.0, help="enrolment sharpness gate (the policy default)")
    p.add_argument("--exclude", action="append", default=[], help="sub-folder name to skip (repeatable)")
    p.add_argument("--pad", type=float, default=0.3, help="replicated border around each image, fraction of its size")
    p.add_argument("--json", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--embedder", dest="embedders", action="append", default=[],
                   help="embedder name or spec path (repeatable: reported side by side; default: the shipped one)")
    p.set_defaults(func=cmd_eval_unlock)

    p = sub.add_parser("bench", help="per-stage latency, cold start and memory (and dlib-native when installed)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--frames", type=Path, help="folder of images to time (default: a bundled 640x480 frame)")
    p.add_argument("--repeat", type=int, default=100, help="timed runs per frame")
    p.add_argument("--json", action="store_true")
    p.add_argument("--embedder", help="embedder name or path (default: the default embedder)")
    p.add_argument("--no-compare", dest="compare", action="store_false",
                   help="do not time the other shipped embedders side by side")
    p.add_argument("--no-dlib", dest="dlib", action="store_false", help="skip the dlib-native comparison")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed (default: report only)")
    p.add_argument("--cold-runs", type=int, default=3, help="fresh processes timed for the cold start (median)")
    p.set_defaults(func=cmd_bench)

    # Commands that live with their own modules (each module's register() adds its
    # sub-parsers; keep those modules light to import).
    from .evaluation import attention_eval, liveness_cli
    from . import bench_store, models_cli

    liveness_cli.register(sub)
    attention_eval.register(sub)
    models_cli.register(sub)
    bench_store.register(sub)
    _add_device_commands(sub)
    return ap


def _short_warnings() -> None:
    """Library warnings (a loose file mode, …) as one 'faceunlock: warning:' line each, once."""
    import warnings

    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if text not in seen:
            seen.add(text)
            _err(f"faceunlock: warning: {text}")

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    """The console entry point: returns the exit code. Every failure is one line on
    stderr and exit 2 (FACEUNLOCK_DEBUG=1 adds the traceback); Ctrl-C is 130; a closed
    stdout or stderr never changes a denial (1) or an error (2) into 0."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        _err("faceunlock: interrupted")
        return 130


#: commands whose exit code 0 means "granted": no argument may end them with 0 unjudged
_DECIDING = {"unlock", "pam-auth"}


def _main(argv: list[str] | None) -> int:
    _short_warnings()
    ap = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        args = ap.parse_args(words)
    except SystemExit as exc:
        # -h/--help exits 0 without judging a face. For a command whose exit 0 means
        # "granted" (unlock, pam-auth) that would grant: `faceunlock unlock "$NAME"` with
        # NAME=--help. Help for those commands is exit 2 (nothing was judged).
        if exc.code in (0, None) and _DECIDING & set(words):
            _err("faceunlock: help shown, nothing was judged (exit 2)")
            return 2
        raise
    if getattr(args, "global_json", False) or not hasattr(args, "json"):
        args.json = bool(getattr(args, "global_json", False))
    if args.version:
        from . import __version__

        _out(__version__)
        if getattr(args, "command", None):  # `--version unlock alice` judged nothing
            _err(f"faceunlock: --version with the command {args.command!r}: nothing was run (exit 2)")
            return 2
        return 0
    if not getattr(args, "func", None):
        try:
            ap.print_help()
        except Exception:
            _silence_stdout()
        return 2
    from .errors import FaceUnlockError

    try:
        return int(args.func(args) or 0)
    except FaceUnlockError as exc:
        _err(f"faceunlock: error: {exc}")
        return 2
    except KeyboardInterrupt:
        _err("faceunlock: interrupted")
        return 130
    except BrokenPipeError:
        # Output went to a closed pipe outside _out(): the command did not finish its
        # report, so its result is unknown — an error, never 0.
        _silence_stdout()
        _err("faceunlock: error: output closed before the command finished")
        return 2
    except PermissionError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        _err(f"faceunlock: error: permission denied:{where} ({exc.strerror or exc})")
        return 2
    except ModuleNotFoundError as exc:
        _err(f"faceunlock: error: the Python package {exc.name!r} is not installed (pip install {exc.name})")
        return 2
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        _err(f"faceunlock: error: {exc.strerror or exc}{where}")
        return 2
    except Exception as exc:  # a bug: still one line and exit 2 (never 1 = "denied")
        import os

        if os.environ.get("FACEUNLOCK_DEBUG") == "1":
            import traceback

            traceback.print_exc()
        _err(f"faceunlock: error: unexpected {type(exc).__name__}: {exc} (FACEUNLOCK_DEBUG=1 shows the traceback)")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
