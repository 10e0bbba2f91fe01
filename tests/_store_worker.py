"""Writer used by the store crash/concurrency tests (imported, or run as a subprocess).

As a script: ``python _store_worker.py STORE KEYHEX SEQ0 NSLOTS`` prints ``ready`` and then
one acknowledgement line per completed write (after ``put``/``update`` returned) until killed:
``p SEQ`` after ``put("slotN", record_for(SEQ))`` and ``c N`` after the counter update.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from faceunlock.store import TemplateStore, UserRecord  # noqa: E402

KEY = bytes(range(32))
DIM = 8


def unit_rows(seed: int, k: int = 2, d: int = DIM) -> np.ndarray:
    """Deterministic (k, d) float32 unit-norm rows for ``seed``."""
    a = np.random.default_rng(seed & 0xFFFFFFFF).standard_normal((k, d)).astype(np.float32)
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def record_for(seq: int) -> UserRecord:
    return UserRecord(templates=unit_rows(seq), embedder="test", created=float(seq), meta={"seq": seq})


def incr(old: UserRecord | None) -> UserRecord:
    n = old.meta["n"] + 1 if old is not None else 1
    return UserRecord(templates=unit_rows(123456), embedder="test", created=0.0, meta={"n": n})


def write_loop(path: str, key: bytes, seq0: int, nslots: int, ack: Callable[[str], None]) -> None:
    """Forever: put a slot user, ack, bump the shared counter, ack, put+remove scratch."""
    store = TemplateStore(path, key=key)
    seq = seq0
    while True:
        store.put(f"slot{seq % nslots}", record_for(seq))
        ack(f"p {seq}\n")
        r = store.update("ctr", incr)
        ack(f"c {r.meta['n']}\n")
        if seq % 3 == 0:
            store.put("scratch", record_for(seq))
            store.remove("scratch")
        seq += 1


def main() -> None:
    path, keyhex, seq0, nslots = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

    def ack(line: str) -> None:
        sys.stdout.write(line)
        sys.stdout.flush()

    ack("ready\n")
    write_loop(path, bytes.fromhex(keyhex), seq0, nslots, ack)


if __name__ == "__main__":
    main()
