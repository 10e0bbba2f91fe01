"""One FaceUnlock shared between threads: attempts run one at a time, each on its own frames.

The engine's TFLite interpreters are not thread-safe, and an attempt keeps per-attempt state
(its frame decision, whose granting template may be adapted into the gallery). Two threads
calling :meth:`FaceUnlock.unlock` on one instance must therefore never interleave. A scripted
engine stands in for the models (see test_review_failopen)."""

from __future__ import annotations

import threading

import numpy as np

import faceunlock as fu
from test_review_failopen import make_unlock, scripted_frames, unit, DIM


def test_concurrent_attempts_on_one_instance_do_not_interleave(tmp_path):
    rng = np.random.default_rng(7)
    owner, stranger = unit(rng.normal(size=DIM)), unit(rng.normal(size=DIM))
    u, _ = make_unlock(tmp_path, [owner, stranger])
    a_inside, b_done = threading.Event(), threading.Event()
    overlapped: list[bool] = []
    results: dict[str, fu.UnlockResult] = {}

    def owner_frames():
        for j, item in enumerate(scripted_frames([0] * 30)):
            yield item
            if j == 0:
                a_inside.set()
                # if the stranger's attempt can run to its end while this one is still
                # reading frames, the two attempts interleave on one engine
                overlapped.append(b_done.wait(timeout=1.0))

    def attempt_a():
        results["a"] = u.unlock("alice", owner_frames())

    def attempt_b():
        assert a_inside.wait(timeout=10)
        results["b"] = u.unlock("alice", scripted_frames([1] * 30))
        b_done.set()

    threads = [threading.Thread(target=attempt_a), threading.Thread(target=attempt_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert overlapped == [False], "the second attempt ran while the first was still reading frames"
    assert results["a"].granted and results["a"].reason is fu.Reason.GRANTED
    assert not results["b"].granted and results["b"].reason is fu.Reason.NO_MATCH


def test_the_attempt_lock_is_reentrant_and_released_on_error(tmp_path):
    """An exception from the frame source releases the lock (the next attempt runs), and
    the lock is re-entrant (a frame source may call assess() on the same instance)."""
    rng = np.random.default_rng(8)
    owner = unit(rng.normal(size=DIM))
    u, _ = make_unlock(tmp_path, [owner])
    u.engine.chip = lambda frame, face: np.full((112, 112, 3), 128, np.uint8)  # for assess()

    def broken():
        yield next(scripted_frames([0]))
        raise RuntimeError("camera unplugged")

    try:
        u.unlock("alice", broken())
    except RuntimeError:
        pass
    done = []
    t = threading.Thread(target=lambda: done.append(u.unlock("alice", scripted_frames([0] * 30)).granted))
    t.start()
    t.join(timeout=10)
    assert done == [True]

    def frames_that_assess():
        for item in scripted_frames([0] * 30):
            assert u.assess(item[1])[0] is not None  # same thread, same instance: no deadlock
            yield item

    assert u.unlock("alice", frames_that_assess()).granted
