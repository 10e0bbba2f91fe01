#!/usr/bin/env python3
"""Face unlock demo: a camera (or the bundled simulated camera) → enrol → unlock.

    python examples/unlock_demo.py                     # no camera: the simulated camera
    python examples/unlock_demo.py --source 0 --user me
    python examples/unlock_demo.py --source clip.mp4 --user me --no-display

With a camera it enrols ``--user`` first if needed (into a throwaway store unless
``--store`` is given), then runs one unlock attempt: a random liveness challenge
("turn your head to the left", "blink", …) followed by the match. With a display it
draws the face box, the landmarks, the prompt, the score and the decision in an OpenCV
window (needs ``opencv-python``, not ``-headless``); without one it prints the same.
With no camera it runs ``faceunlock demo``: the owner granted, a printed photo denied by
liveness, an impostor denied as no match.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import faceunlock as fu
from faceunlock import camera, demo


def main() -> int:
    """Exit 0 granted, 1 denied; every error is one line on stderr and exit 2; Ctrl-C 130."""
    try:
        return _main()
    except KeyboardInterrupt:
        _say("unlock_demo: interrupted")
        return 130
    except fu.FaceUnlockError as exc:  # no camera, a busy one, a bad store, …
        _say(f"unlock_demo: error: {exc}")
        return 2
    except OSError as exc:
        _say(f"unlock_demo: error: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")
        return 2


def _say(text: str) -> None:
    try:
        print(text, file=sys.stderr, flush=True)
    except Exception:
        pass


def _main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", help="camera index, /dev/videoN, picamera, video file or image folder "
                    "(default: the first camera, else the simulated camera)")
    ap.add_argument("--user", default="me")
    ap.add_argument("--store", type=Path, help="store file (default: a throwaway one)")
    ap.add_argument("--display", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--no-challenge", action="store_true", help="skip the challenge–response step")
    args = ap.parse_args()

    source = args.source
    if source is None:
        devices = camera.list_video_devices()
        if not devices:
            print("no camera found: running the simulated camera (faceunlock demo)")
            return demo.run(display=args.display)
        source = devices[0]
    engine = fu.FaceEngine(threads=1)
    window = demo._open_window(args.display)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.store or Path(tmp) / "demo.fus"
        store = fu.TemplateStore(path, key_file=None if args.store else Path(tmp) / "demo.key")
        # A challenge of 2-3 prompts takes up to ~10 s: a longer budget than the default 3 s.
        policy = fu.Policy(timeout_s=15.0, max_frames=450)
        unlocker = fu.FaceUnlock(store, engine=engine, policy=policy)

        def show(frame, lines):
            if window:
                import cv2

                cv2.imshow(window, demo.annotate(engine, frame, lines))
                cv2.waitKey(1)

        if args.user not in unlocker.users():
            with camera.open(source, max_seconds=20) as cam:
                print(f"enrolling {args.user!r}: look at the camera and turn your head slowly")
                def frames():
                    for f in cam:
                        show(f.image, ["enrolling: turn your head slowly"])
                        yield f.image

                shown = []

                def progress(n, need, q):
                    if shown != [n, q.problem]:
                        shown[:] = [n, q.problem]
                        print(f"  poses captured {n}/{unlocker.policy.enroll_max_templates} - {q.problem or 'good'}")

                r = unlocker.enroll(args.user, frames(), progress=progress)
            print(f"enrolled: {r.templates} templates")

        # One attempt: the passive liveness check (on by default) and, unless
        # --no-challenge, a random challenge fed by the same frames.
        ch = unlocker.liveness.new_challenge() if not args.no_challenge else None
        t0 = time.perf_counter()
        last, said = [], [None]
        with camera.open(source, max_seconds=30) as cam:
            def frames():
                for f in cam:
                    prompt = ch.state.prompt.value if ch is not None and ch.state.prompt else "look at the camera"
                    show(f.image, [prompt])
                    if window is None and prompt != said[0]:
                        said[0] = prompt
                        print(f"  {prompt}")
                    last[:] = [f.image]
                    yield f.timestamp_s, f.image

            r = unlocker.unlock(args.user, frames(), challenge=ch)
        if r.hint:
            print(f"  hint: {r.hint}")
        verdict = "GRANTED" if r.granted else f"DENIED ({r.reason.value})"
        score = "-" if r.score is None else f"{r.score:.4f}"
        print(f"{verdict}: score {score} (threshold {unlocker.threshold:.4f}), {r.frames_used} frames, "
              f"{(time.perf_counter() - t0) * 1000:.0f} ms")
        if window and last:
            import cv2

            show(last[0], [verdict, f"score {score}"])
            cv2.waitKey(1500)
            cv2.destroyAllWindows()
        return 0 if r.granted else 1


if __name__ == "__main__":
    sys.exit(main())
