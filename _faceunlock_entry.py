"""Console entry point of ``faceunlock``: Ctrl-C handling before anything heavy is imported.

The ``faceunlock`` script imports this tiny top-level module rather than
``faceunlock.cli`` so that SIGINT is handled from the first moment: importing the package
(OpenCV, numpy) takes a few hundred milliseconds, and an interrupt then must still end
with one line on stderr and exit 130, not a traceback.
"""

from __future__ import annotations

import os
import signal
import sys


def _interrupted_during_import(signum, frame) -> None:  # pragma: no cover - timing dependent
    try:
        os.write(2, b"faceunlock: interrupted\n")
    except OSError:
        pass
    os._exit(130)  # nothing to clean up yet: no store, camera or file is open


def _install() -> None:
    try:
        signal.signal(signal.SIGINT, _interrupted_during_import)
    except (ValueError, OSError):  # not the main thread / no signals: keep the default
        pass


_install()


def main() -> int:
    """Import the CLI under the early SIGINT handler, then run it with Python's own
    KeyboardInterrupt (so ``finally`` blocks release the store lock and the camera)."""
    _install()
    try:
        from faceunlock.cli import main as cli_main
    except Exception as exc:  # a broken install: still one line and exit 2
        if os.environ.get("FACEUNLOCK_DEBUG") == "1":
            import traceback

            traceback.print_exc()
        try:
            os.write(2, f"faceunlock: error: cannot import faceunlock ({type(exc).__name__}: {exc}); "
                        "reinstall it (FACEUNLOCK_DEBUG=1 shows the traceback)\n".encode())
        except OSError:
            pass
        return 2

    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    except (ValueError, OSError):
        pass
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
