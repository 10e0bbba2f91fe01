"""Encrypted, authenticated, crash-safe storage of face templates.

One file per profile holds every enrolled user of that profile. Each user's record is
sealed with AES-256-GCM; the whole file is additionally covered by an HMAC-SHA256, so a
changed, missing or added byte anywhere is detected. The byte layout, the crypto, the key
sources, the locking protocol and the threat model are documented in ``docs/STORE.md``.

Security rules kept here on purpose:

* only standard primitives from ``cryptography`` (AES-GCM, HMAC-SHA256, HKDF-SHA256,
  Argon2id / scrypt); no home-made crypto;
* every way stored data can fail authentication raises :class:`StoreIntegrityError` with
  one generic message (no oracle), and the file is never modified when it is raised;
* MACs and key checks are compared in constant time (:func:`hmac.compare_digest`);
* template bytes never reach disk in plaintext, nor any message, ``repr`` or log.

This module never imports the engine, the camera or the CLI, and has no network code.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import stat
import struct
import threading
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .errors import InsecurePermissionsError, StoreError, StoreIntegrityError

__all__ = [
    "TemplateStore",
    "UserRecord",
    "Argon2idParams",
    "ScryptParams",
    "StoreValueError",
    "default_store_path",
    "default_key_path",
    "argon2id_available",
    "MAGIC",
    "FORMAT_VERSION",
    "KEY_BYTES",
    "MAX_USER_ID_BYTES",
    "MAX_META_BYTES",
    "MAX_TEMPLATES",
    "MAX_DIM",
    "MAX_USERS",
    "MAX_FILE_BYTES",
    "Counters",
]

PathLike = Union[str, "os.PathLike[str]"]

# --------------------------------------------------------------------------- format
MAGIC: bytes = b"\x89FUS\r\n\x1a\n"  #: 8 bytes, PNG-style: catches text-mode mangling
FORMAT_VERSION: int = 1
KEY_BYTES: int = 32  #: raw key length in bytes (AES-256)
SALT_BYTES: int = 16
NONCE_BYTES: int = 12  #: 96-bit GCM nonce, random per write
TAG_BYTES: int = 16  #: GCM tag
ID_BYTES: int = 32  #: keyed user tag, HMAC-SHA256
MAC_BYTES: int = 32  #: HMAC-SHA256
MAX_USER_ID_BYTES: int = 256
MAX_META_BYTES: int = 64 * 1024
MAX_TEMPLATES: int = 4096  #: rows per user
MAX_DIM: int = 8192  #: template dimension
MAX_USERS: int = 100_000
MAX_FILE_BYTES: int = 512 * 1024 * 1024  #: whole store file; a write that would exceed it is refused
MAX_META_DEPTH: int = 32  #: nesting depth of UserRecord.meta (dicts and lists)

# Floor on the KDF cost of a NEW passphrase store (OWASP password storage guidance).
# Existing stores open with whatever their header says (within the MAX_* bounds below).
MIN_ARGON2_MEMORY_KIB: int = 19 * 1024  # 19 MiB
MIN_ARGON2_ITERATIONS: int = 2
MIN_SCRYPT_LOG2_N: int = 17
MIN_SCRYPT_R: int = 8

KDF_NONE = 0  # raw 256-bit key (app key or key file)
KDF_ARGON2ID = 1
KDF_SCRYPT = 2

_HDR = struct.Struct(">8sHBBIII16s")  # magic, version, kdf, reserved, p1, p2, p3, salt
_FIXED = _HDR.size  # 40
_HEADER_LEN = _FIXED + MAC_BYTES  # 72: fixed part + key check
_COUNT = struct.Struct(">I")
_ENTRY = struct.Struct(">32s12sI")  # user tag, nonce, ciphertext length
_MIN_FILE = _HEADER_LEN + _COUNT.size + MAC_BYTES
_HKDF_INFO = b"faceunlock store v1 subkeys"

# Upper bounds on KDF parameters read from a file: a tampered header must not be able
# to make opening the store allocate unbounded memory or run for hours.
MAX_ARGON2_MEMORY_KIB: int = 1 << 20  # 1 GiB
MAX_ARGON2_ITERATIONS: int = 16
MAX_ARGON2_LANES: int = 64
MAX_SCRYPT_LOG2_N: int = 22
MAX_SCRYPT_R: int = 32
MAX_SCRYPT_P: int = 16
MAX_SCRYPT_MEMORY_BYTES: int = 1 << 30

_INTEGRITY_MESSAGE = (
    "template store failed authentication: it is corrupt, truncated or tampered with, "
    "or the key or passphrase is wrong"
)

_TMP_PREFIX = ".{name}.tmp-"
_TMP_SUFFIX_RE = re.compile(r"^[0-9a-f]{32}$")

# Attempt-counter file ``<store>.att`` (docs/STORE.md, "Attempt counters"): lockout fields
# changed without touching templates are written here, bound to the store file's MAC, so
# charging or refunding an unlock attempt does not rewrite the whole store.
ATT_MAGIC: bytes = b"\x89FUA\r\n\x1a\n"
_ATT_ENTRY = struct.Struct(">32sIdBd")  # user tag, failures, locked_until, permanent_lock, last_attempt
_ATT_MIN = len(ATT_MAGIC) + MAC_BYTES + NONCE_BYTES + TAG_BYTES + 4
_ATT_MAX = _ATT_MIN + MAX_USERS * _ATT_ENTRY.size


@dataclass(frozen=True)
class Counters:
    """A user's lockout state alone (what :meth:`TemplateStore.update_counters` passes);
    fields as in :class:`UserRecord`. Fits :class:`faceunlock.policy.LockoutState`."""

    failures: int
    locked_until: float
    permanent_lock: bool
    last_attempt: float


class StoreValueError(StoreError, ValueError):
    """A bad argument to the store: wrong key length, invalid user id, invalid record."""


def _integrity() -> StoreIntegrityError:
    return StoreIntegrityError(_INTEGRITY_MESSAGE)


# --------------------------------------------------------------------------- KDF params
@dataclass(frozen=True)
class Argon2idParams:
    """Argon2id cost (RFC 9106). Defaults: 64 MiB, 3 passes, 4 lanes (~0.15 s on a laptop).

    Attributes:
        memory_kib: memory cost in KiB (≥ 8 × lanes, ≤ :data:`MAX_ARGON2_MEMORY_KIB`).
        iterations: number of passes (1 … :data:`MAX_ARGON2_ITERATIONS`).
        lanes: degree of parallelism (1 … :data:`MAX_ARGON2_LANES`).
    """

    memory_kib: int = 64 * 1024
    iterations: int = 3
    lanes: int = 4

    def __post_init__(self) -> None:
        if not _argon2_ok(self.memory_kib, self.iterations, self.lanes):
            raise StoreValueError(
                f"invalid Argon2id parameters: memory_kib={self.memory_kib!r} (8*lanes.."
                f"{MAX_ARGON2_MEMORY_KIB}), iterations={self.iterations!r} (1..{MAX_ARGON2_ITERATIONS}), "
                f"lanes={self.lanes!r} (1..{MAX_ARGON2_LANES})"
            )


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost, used only where Argon2id is unavailable. Defaults: N=2**17, r=8, p=1 (128 MiB).

    Attributes:
        log2_n: log2 of the CPU/memory cost N.
        r: block size.
        p: parallelism.
    """

    log2_n: int = 17
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        if not _scrypt_ok(self.log2_n, self.r, self.p):
            raise StoreValueError(
                f"invalid scrypt parameters: log2_n={self.log2_n!r}, r={self.r!r}, p={self.p!r} "
                f"(memory 128*r*2**log2_n must be <= {MAX_SCRYPT_MEMORY_BYTES} bytes)"
            )


KdfParams = Union[Argon2idParams, ScryptParams]


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _argon2_ok(m: object, t: object, lanes: object) -> bool:
    return (
        _is_int(m) and _is_int(t) and _is_int(lanes)
        and 1 <= lanes <= MAX_ARGON2_LANES  # type: ignore[operator]
        and 1 <= t <= MAX_ARGON2_ITERATIONS  # type: ignore[operator]
        and 8 * lanes <= m <= MAX_ARGON2_MEMORY_KIB  # type: ignore[operator]
    )


def _scrypt_ok(log2_n: object, r: object, p: object) -> bool:
    return (
        _is_int(log2_n) and _is_int(r) and _is_int(p)
        and 1 <= log2_n <= MAX_SCRYPT_LOG2_N  # type: ignore[operator]
        and 1 <= r <= MAX_SCRYPT_R  # type: ignore[operator]
        and 1 <= p <= MAX_SCRYPT_P  # type: ignore[operator]
        and 128 * r * (1 << log2_n) <= MAX_SCRYPT_MEMORY_BYTES  # type: ignore[operator]
    )


def _check_kdf_floor(p: KdfParams, allow_weak: bool) -> None:
    """Refuse KDF costs below the floor for a new passphrase store (unless a test opts out)."""
    if allow_weak:
        return
    if isinstance(p, Argon2idParams):
        if p.memory_kib < MIN_ARGON2_MEMORY_KIB or p.iterations < MIN_ARGON2_ITERATIONS:
            raise StoreValueError(
                f"Argon2id cost memory_kib={p.memory_kib}, iterations={p.iterations} is below the floor "
                f"for a new store (memory_kib >= {MIN_ARGON2_MEMORY_KIB}, iterations >= {MIN_ARGON2_ITERATIONS})"
            )
    elif p.log2_n < MIN_SCRYPT_LOG2_N or p.r < MIN_SCRYPT_R:
        raise StoreValueError(
            f"scrypt cost log2_n={p.log2_n}, r={p.r} is below the floor for a new store "
            f"(log2_n >= {MIN_SCRYPT_LOG2_N}, r >= {MIN_SCRYPT_R})"
        )


_ARGON2_AVAILABLE: bool | None = None


def argon2id_available() -> bool:
    """True when this ``cryptography`` build can run Argon2id (else scrypt is used)."""
    global _ARGON2_AVAILABLE
    if _ARGON2_AVAILABLE is None:
        try:
            from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

            Argon2id(salt=b"\0" * 16, length=32, iterations=1, lanes=1, memory_cost=8).derive(b"x")
            _ARGON2_AVAILABLE = True
        except Exception:  # ImportError, UnsupportedAlgorithm on some OpenSSL builds
            _ARGON2_AVAILABLE = False
    return _ARGON2_AVAILABLE


def _derive_passphrase(passphrase: bytes, kdf: int, p1: int, p2: int, p3: int, salt: bytes) -> bytes:
    """The 256-bit master key for a passphrase; parameters must already be bounds-checked."""
    if kdf == KDF_ARGON2ID:
        if not argon2id_available():
            raise StoreError("this store needs Argon2id, which this cryptography build lacks")
        from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

        return Argon2id(
            salt=salt, length=KEY_BYTES, iterations=p2, lanes=p3, memory_cost=p1
        ).derive(passphrase)
    if kdf == KDF_SCRYPT:
        return Scrypt(salt=salt, length=KEY_BYTES, n=1 << p1, r=p2, p=p3).derive(passphrase)
    raise _integrity()


# --------------------------------------------------------------------------- records
@dataclass(eq=False, repr=False)
class UserRecord:
    """Everything stored for one enrolled user.

    Attributes:
        templates: (K, D) float32 array, one unit-L2-norm template per row.
        embedder: name/id of the model that made the templates.
        created: enrolment time, unix seconds.
        failures: consecutive failed match attempts.
        locked_until: end of the current lockout, unix seconds (wall clock); 0 = not locked.
        permanent_lock: locked until :func:`faceunlock.policy.reset_lockout`.
        last_attempt: unix seconds of the latest attempt recorded (resists clocks set back).
        meta: small JSON-able dict (poses, counts) — never templates.

    ``repr``/``str`` show the template shape and embedder, never template values.
    """

    templates: np.ndarray
    embedder: str
    created: float
    failures: int = 0
    locked_until: float = 0.0
    permanent_lock: bool = False
    last_attempt: float = 0.0
    meta: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        shape = getattr(self.templates, "shape", None)
        return (
            f"UserRecord(templates=<{shape} hidden>, embedder={self.embedder!r}, "
            f"created={self.created!r}, failures={self.failures!r}, "
            f"locked_until={self.locked_until!r}, permanent_lock={self.permanent_lock!r}, "
            f"last_attempt={self.last_attempt!r}, meta_keys={sorted(map(str, self.meta))!r})"
        )

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UserRecord):
            return NotImplemented
        return (
            self.embedder == other.embedder
            and self.created == other.created
            and self.failures == other.failures
            and self.locked_until == other.locked_until
            and self.permanent_lock == other.permanent_lock
            and self.last_attempt == other.last_attempt
            and self.meta == other.meta
            and np.array_equal(np.asarray(self.templates), np.asarray(other.templates))
        )


def _check_user(user: object) -> bytes:
    """Validated user id as UTF-8 bytes."""
    if not isinstance(user, str) or not user:
        raise StoreValueError("user id must be a non-empty str")
    try:
        raw = user.encode("utf-8")
    except UnicodeEncodeError:
        raise StoreValueError("user id must be valid Unicode (no lone surrogates)") from None
    if len(raw) > MAX_USER_ID_BYTES:
        raise StoreValueError(f"user id is longer than {MAX_USER_ID_BYTES} UTF-8 bytes")
    if "\0" in user:
        raise StoreValueError("user id must not contain NUL")
    return raw


def _finite(name: str, v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
        raise StoreValueError(f"UserRecord.{name} must be a number")
    f = float(v)
    if not math.isfinite(f):
        raise StoreValueError(f"UserRecord.{name} must be finite")
    return f


def _encode_record(user: str, rec: UserRecord) -> bytes:
    """Plaintext of a sealed record: u32 JSON length, JSON, then float32 LE templates."""
    if not isinstance(rec, UserRecord):
        raise StoreValueError("record must be a UserRecord")
    t = rec.templates
    if not isinstance(t, np.ndarray) or t.ndim != 2:
        raise StoreValueError("UserRecord.templates must be a 2-D numpy array (K, D)")
    k, d = t.shape
    if not (1 <= k <= MAX_TEMPLATES and 1 <= d <= MAX_DIM):
        raise StoreValueError(
            f"UserRecord.templates shape {t.shape} out of range (1..{MAX_TEMPLATES}, 1..{MAX_DIM})"
        )
    if not (np.issubdtype(t.dtype, np.floating) or np.issubdtype(t.dtype, np.integer)):
        raise StoreValueError("UserRecord.templates must be a float array")
    t32 = np.ascontiguousarray(t, dtype="<f4")
    if not np.all(np.isfinite(t32)):
        raise StoreValueError("UserRecord.templates must be finite")
    norms = np.linalg.norm(t32.astype(np.float64), axis=1)
    if not np.all(np.abs(norms - 1.0) <= 1e-3):
        raise StoreValueError("UserRecord.templates rows must have unit L2 norm")
    if not isinstance(rec.embedder, str) or len(rec.embedder.encode("utf-8", "replace")) > 256:
        raise StoreValueError("UserRecord.embedder must be a str of at most 256 bytes")
    failures = rec.failures
    if not (_is_int(failures) or isinstance(failures, np.integer)) or failures < 0:
        raise StoreValueError("UserRecord.failures must be an int >= 0")
    if not isinstance(rec.permanent_lock, (bool, np.bool_)):
        raise StoreValueError("UserRecord.permanent_lock must be a bool")
    if not isinstance(rec.meta, dict):
        raise StoreValueError("UserRecord.meta must be a dict")
    if not _json_depth_ok(rec.meta, MAX_META_DEPTH):
        raise StoreValueError(f"UserRecord.meta is nested deeper than {MAX_META_DEPTH} levels")
    try:
        meta_js = json.dumps(rec.meta, allow_nan=False, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError):
        raise StoreValueError("UserRecord.meta must be a JSON-able dict of finite values") from None
    if len(meta_js) > MAX_META_BYTES:  # ASCII (ensure_ascii): characters == bytes
        raise StoreValueError(f"UserRecord.meta is larger than {MAX_META_BYTES} bytes as JSON")
    head = {
        "v": 1,
        "user": user,
        "embedder": rec.embedder,
        "created": _finite("created", rec.created),
        "failures": int(failures),
        "locked_until": _finite("locked_until", rec.locked_until),
        "permanent_lock": bool(rec.permanent_lock),
        "last_attempt": _finite("last_attempt", rec.last_attempt),
        "shape": [int(k), int(d)],
        "meta": rec.meta,
    }
    try:
        js = json.dumps(head, allow_nan=False, separators=(",", ":"), sort_keys=True).encode("utf-8")
    except (TypeError, ValueError):
        raise StoreValueError("UserRecord.meta must be a JSON-able dict of finite values") from None
    if len(js) > MAX_META_BYTES + 4096:
        raise StoreValueError(f"UserRecord.meta is larger than {MAX_META_BYTES} bytes")
    return _COUNT.pack(len(js)) + js + t32.tobytes()


def _json_depth_ok(v: object, limit: int) -> bool:
    """True when dicts/lists/tuples in ``v`` nest at most ``limit`` deep (iterative, cycle-safe)."""
    stack = [(v, 1)]
    while stack:
        x, d = stack.pop()
        if isinstance(x, dict):
            items: Iterable[object] = x.values()
        elif isinstance(x, (list, tuple)):
            items = x
        else:
            continue
        if d > limit:
            return False
        stack.extend((y, d + 1) for y in items)
    return True


def _decode_record(pt: bytes) -> tuple[str, UserRecord]:
    """Inverse of :func:`_encode_record`; plaintext is authenticated, errors are integrity errors."""
    try:
        (n,) = _COUNT.unpack_from(pt, 0)
        head = json.loads(pt[4 : 4 + n].decode("utf-8"))
        k, d = head["shape"]
        body = pt[4 + n :]
        if (
            head["v"] != 1 or not _is_int(k) or not _is_int(d) or k < 1 or d < 1
            or len(body) != 4 * k * d
        ):
            raise ValueError
        templates = np.frombuffer(body, dtype="<f4").astype(np.float32).reshape(k, d)
        rec = UserRecord(
            templates=templates,
            embedder=str(head["embedder"]),
            created=float(head["created"]),
            failures=int(head["failures"]),
            locked_until=float(head["locked_until"]),
            permanent_lock=bool(head["permanent_lock"]),
            last_attempt=float(head["last_attempt"]),
            meta=dict(head["meta"]),
        )
        user = head["user"]
        if not isinstance(user, str):
            raise ValueError
        return user, rec
    except Exception:
        raise _integrity() from None


def _lockout_fields(rec: UserRecord) -> tuple[int, float, bool, float]:
    """The validated lockout fields of a record (what the .att file holds)."""
    failures = rec.failures
    if not (_is_int(failures) or isinstance(failures, np.integer)) or failures < 0 or failures > 0xFFFFFFFF:
        raise StoreValueError("UserRecord.failures must be an int >= 0")
    if not isinstance(rec.permanent_lock, (bool, np.bool_)):
        raise StoreValueError("UserRecord.permanent_lock must be a bool")
    return (int(failures), _finite("locked_until", rec.locked_until), bool(rec.permanent_lock),
            _finite("last_attempt", rec.last_attempt))


def _lockout_only(old: UserRecord | None, new: UserRecord | None) -> bool:
    """True when ``new`` differs from the existing ``old`` in lockout fields only."""
    if old is None or new is None or not isinstance(new, UserRecord):
        return False
    if new.embedder != old.embedder or new.created != old.created or new.meta != old.meta:
        return False
    t = new.templates
    return t is old.templates or (
        isinstance(t, np.ndarray) and t.shape == old.templates.shape and t.dtype == old.templates.dtype
        and np.array_equal(t, old.templates)
    )


# --------------------------------------------------------------------------- paths
_SYSTEM_ROOT = Path("/var/lib/faceunlock")


def _data_home() -> Path | None:
    """``$XDG_DATA_HOME`` (absolute only, per the XDG spec) or ~/.local/share; None for root w/o XDG."""
    xdg = os.environ.get("XDG_DATA_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg)
    if os.geteuid() == 0:
        return None
    return Path.home() / ".local" / "share"


def default_store_path() -> Path:
    """Default store file: ``$XDG_DATA_HOME/faceunlock/store/default.fus``.

    Falls back to ``~/.local/share``; for root without ``XDG_DATA_HOME`` it is the system
    store ``/var/lib/faceunlock/store/default.fus``.
    """
    home = _data_home()
    if home is None:
        return _SYSTEM_ROOT / "store" / "default.fus"
    return home / "faceunlock" / "store" / "default.fus"


def default_key_path(store_path: PathLike) -> Path:
    """Default key file of a store: ``<data>/faceunlock/keys/<stem>-<hash16>.key``.

    ``<hash16>`` is the first 16 hex digits of SHA-256 of the store's real absolute path,
    so two stores never share a key file. ``<data>`` is ``/var/lib/faceunlock`` for a store
    under ``/var/lib/faceunlock`` (or root without ``XDG_DATA_HOME``), else the user's
    ``$XDG_DATA_HOME`` (fallback ``~/.local/share``). Moving a store changes this path:
    pass ``key_file=`` explicitly for stores that move.
    """
    real = Path(os.path.realpath(os.fspath(store_path)))
    sysroot = Path(os.path.realpath(_SYSTEM_ROOT))
    home = _data_home()
    if real == sysroot or sysroot in real.parents or home is None:
        keys = _SYSTEM_ROOT / "keys"
    else:
        keys = home / "faceunlock" / "keys"
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", real.stem)[:64] or "store"
    digest = hashlib.sha256(os.fsencode(str(real))).hexdigest()[:16]
    return keys / f"{stem}-{digest}.key"


# --------------------------------------------------------------------------- file helpers
def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs_private(d: Path) -> None:
    """Create ``d`` (and missing parents) with mode 0700."""
    missing = []
    p = d
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for q in reversed(missing):
        try:
            os.mkdir(q, 0o700)
        except FileExistsError:
            continue
        os.chmod(q, 0o700)  # umask may have removed bits; never adds any


# Permission rules (docs/STORE.md, "File permissions"): what lets another user read a key
# or replace/roll back a store is refused with InsecurePermissionsError; looser-than-needed
# but not exploitable modes give a UserWarning. They apply to every user, root included.
def _check_store_dir(d: Path) -> None:
    """Refuse a world-writable store directory without the sticky bit; warn if sticky or group-writable."""
    try:
        mode = os.stat(d).st_mode
    except OSError:
        return
    if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
        raise InsecurePermissionsError(
            f"refusing the store directory {d}: it is world-writable (mode {stat.S_IMODE(mode):04o}), "
            f"so anyone could replace the store with an older copy; run: chmod o-w {d}"
        )
    if mode & stat.S_IWOTH:
        warnings.warn(
            f"store directory {d} is a shared sticky directory (like /tmp): other users can pre-create "
            "or hold the store's lock file there; use a private directory (chmod 700)",
            stacklevel=4,
        )
    elif mode & stat.S_IWGRP:
        warnings.warn(f"store directory {d} is group-writable; chmod g-w {d}", stacklevel=4)


def _check_store_file(path: Path) -> None:
    """Refuse a world-writable store file (anyone could roll it back); warn if group/others have access."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return
    if mode & stat.S_IWOTH:
        raise InsecurePermissionsError(
            f"refusing the store file {path}: it is world-writable (mode {mode:04o}), so anyone could "
            f"replace it with an older copy; run: chmod 600 {path}"
        )
    if mode & 0o077:
        warnings.warn(f"store file {path} is accessible by group/others; chmod 600 {path}", stacklevel=4)


def _check_key_dir(d: Path) -> None:
    """Refuse a world-writable key directory (sticky or not); warn if group/others have access."""
    try:
        mode = stat.S_IMODE(os.stat(d).st_mode)
    except OSError:
        return
    if mode & stat.S_IWOTH:
        raise InsecurePermissionsError(
            f"refusing the key directory {d}: it is world-writable (mode {mode:04o}), so anyone could "
            f"plant or swap key files there; run: chmod 700 {d}"
        )
    if mode & 0o077:
        warnings.warn(f"key directory {d} is accessible by group/others; chmod 700 {d}", stacklevel=4)


def _check_key_file_mode(path: Path, mode: int) -> None:
    """Refuse a key file readable by group/others or world-writable; warn on other group/other bits."""
    mode = stat.S_IMODE(mode)
    if mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWOTH):
        raise InsecurePermissionsError(
            f"refusing the key file {path}: other users can read or write it (mode {mode:04o}); "
            f"run: chmod 600 {path} (and rekey if someone may have copied it)"
        )
    if mode & 0o077:
        warnings.warn(f"key file {path} is accessible by group/others; chmod 600 {path}", stacklevel=4)


@contextmanager
def _dir_lock(d: Path) -> Iterator[None]:
    """Exclusive ``flock`` on the directory ``d`` itself.

    Serialises creating, rotating and cleaning up key files between processes (a key file
    may be shared by several stores, so the store lock is not enough). Where ``d`` cannot
    be opened or locked (missing, no permission) the body runs unlocked.
    """
    fd = -1
    try:
        fd = os.open(d, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        pass
    try:
        yield
    finally:
        if fd >= 0:
            os.close(fd)  # closing releases the flock


def _remove_stale_temps(target: Path) -> None:
    """Delete ``.<name>.tmp-<32 hex>`` files of ``target`` left by a crashed writer.

    Only call this while holding the lock every writer of ``target`` holds (the store's
    exclusive lock for a store, :func:`_dir_lock` of its directory for a key file): then any
    such file is stale. A key file's temp file is a hard link to (or a copy of) a key.
    """
    prefix = _TMP_PREFIX.format(name=target.name)
    try:
        names = os.listdir(target.parent)
    except OSError:
        return
    removed = False
    for n in names:
        if n.startswith(prefix) and _TMP_SUFFIX_RE.match(n[len(prefix) :]):
            try:
                os.unlink(target.parent / n)
                removed = True
            except OSError:
                pass
    if removed:
        try:
            _fsync_dir(target.parent)
        except OSError:
            pass


def _store_file_bytes(ct_lengths: Iterable[int]) -> int:
    """Size in bytes of a store file whose records have these ciphertext lengths."""
    return _HEADER_LEN + _COUNT.size + sum(_ENTRY.size + n for n in ct_lengths) + MAC_BYTES


def _check_file_limits(ct_lengths: list[int]) -> None:
    """Refuse (before anything is written) a store file that :meth:`TemplateStore._read` would reject."""
    if len(ct_lengths) > MAX_USERS:
        raise StoreValueError(f"a store holds at most {MAX_USERS} users; nothing was written")
    size = _store_file_bytes(ct_lengths)
    if size > MAX_FILE_BYTES:
        raise StoreValueError(
            f"this write would make the store file {size} bytes, above its limit of {MAX_FILE_BYTES} "
            "bytes; nothing was written (store fewer or smaller templates, or use a second store)"
        )


def _write_new_file(path: Path, data: bytes, *, replace: bool) -> None:
    """Atomically write ``data`` to ``path`` (0600): temp file, fsync, replace/link, fsync dir.

    With ``replace=False`` the final step is ``os.link``, which fails if ``path`` exists.
    """
    tmp = path.parent / f"{_TMP_PREFIX.format(name=path.name)}{secrets.token_hex(16)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                _write_exclusive(path, data)  # filesystem without hard links
            os.unlink(tmp)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def _write_exclusive(path: Path, data: bytes) -> None:
    """Create ``path`` (0600) with ``data``; fails if it exists. Not atomic in content."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_key_file(path: Path) -> list[bytes]:
    """Keys in a key file: 32 bytes, or 64 (old ‖ new) while a rotation is in progress."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise StoreError(f"key file is missing: {path}") from None
    except OSError as e:
        raise StoreError(f"cannot read key file {path}: {e.strerror}") from None
    try:
        _check_key_file_mode(path, os.fstat(fd).st_mode)
        _check_key_dir(path.parent)
        data = os.read(fd, 3 * KEY_BYTES)
    finally:
        os.close(fd)
    if len(data) not in (KEY_BYTES, 2 * KEY_BYTES):
        raise StoreError(f"key file {path} is not a valid faceunlock key file")
    return [data[i : i + KEY_BYTES] for i in range(0, len(data), KEY_BYTES)]


# --------------------------------------------------------------------------- parsed file
@dataclass
class _Keys:
    enc: bytes
    mac: bytes
    uid: bytes
    check: bytes


def _subkeys(master: bytes, salt: bytes) -> _Keys:
    okm = HKDF(algorithm=hashes.SHA256(), length=4 * 32, salt=salt, info=_HKDF_INFO).derive(master)
    return _Keys(okm[0:32], okm[32:64], okm[64:96], okm[96:128])


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


@dataclass
class _Header:
    kdf: int
    p1: int
    p2: int
    p3: int
    salt: bytes

    def fixed(self) -> bytes:
        return _HDR.pack(MAGIC, FORMAT_VERSION, self.kdf, 0, self.p1, self.p2, self.p3, self.salt)


@dataclass
class _Entry:
    tag: bytes
    nonce: bytes
    ct: bytes | memoryview  # a view into the file buffer when read from disk


@dataclass
class _Opened:
    header: _Header
    header_bytes: bytes  # 72 bytes: fixed part + key check
    keys: _Keys
    master: bytes
    entries: dict[bytes, _Entry]
    mac: bytes = b""  # the file's MAC trailer ("" for a file not yet written)
    att: dict[bytes, tuple[int, float, bool, float]] = field(default_factory=dict)  # valid counters overlay
    fresh: set[bytes] = field(default_factory=set)  # tags re-sealed by the current write


def _parse_header(data: bytes) -> _Header:
    if len(data) < _MIN_FILE or len(data) > MAX_FILE_BYTES:
        raise _integrity()
    magic, version, kdf, reserved, p1, p2, p3, salt = _HDR.unpack_from(data, 0)
    if magic != MAGIC or version != FORMAT_VERSION or reserved != 0:
        raise _integrity()
    if kdf == KDF_NONE:
        ok = p1 == p2 == p3 == 0
    elif kdf == KDF_ARGON2ID:
        ok = _argon2_ok(p1, p2, p3)
    elif kdf == KDF_SCRYPT:
        ok = _scrypt_ok(p1, p2, p3)
    else:
        ok = False
    if not ok:
        raise _integrity()
    return _Header(kdf, p1, p2, p3, salt)


def _parse_entries(data: bytes) -> dict[bytes, _Entry]:
    """Record entries of an already MAC-verified file (still parsed defensively)."""
    end = len(data) - MAC_BYTES
    (n,) = _COUNT.unpack_from(data, _HEADER_LEN)
    if n > MAX_USERS:
        raise _integrity()
    off = _HEADER_LEN + _COUNT.size
    entries: dict[bytes, _Entry] = {}
    view = memoryview(data)
    prev = b""
    for _ in range(n):
        if off + _ENTRY.size > end:
            raise _integrity()
        tag, nonce, ln = _ENTRY.unpack_from(data, off)
        off += _ENTRY.size
        if ln < TAG_BYTES + 4 or off + ln > end or tag <= prev:
            raise _integrity()
        entries[tag] = _Entry(tag, nonce, view[off : off + ln])  # no copy of the ciphertext
        off += ln
        prev = tag
    if off != end:
        raise _integrity()
    return entries


# --------------------------------------------------------------------------- locking
_held = threading.local()


@contextmanager
def _flock(lock_path: Path, exclusive: bool) -> Iterator[None]:
    held: set[str] = getattr(_held, "paths", None) or set()
    _held.paths = held
    key = os.fspath(lock_path)
    if key in held:
        raise StoreError("re-entrant store access (e.g. calling the store inside update()'s fn)")
    fd = -1
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        if exclusive or e.errno not in (errno.EACCES, errno.EROFS, errno.EPERM, errno.ENOENT):
            raise StoreError(f"cannot open lock file {lock_path}: {e.strerror}") from None
        try:  # read-only access: lock if the lock file exists, else rely on atomic replace
            fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            fd = -1
    held.add(key)
    try:
        if fd >= 0:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        held.discard(key)
        if fd >= 0:
            os.close(fd)  # closing releases the flock


# --------------------------------------------------------------------------- the store
class TemplateStore:
    """An encrypted template store: one file, many users.

    Args:
        path: the store file (conventionally ``*.fus``). Its directory is created 0700 if missing.
        key: 32 raw bytes from the application (Android Keystore, TPM, OS keyring).
        passphrase: str (NFC-normalised, UTF-8) or bytes; stretched with Argon2id
            (scrypt where Argon2id is unavailable); salt and cost live in the header.
        key_file: location of the random-key file; default :func:`default_key_path`.
        create: when the store file is missing, start an empty store (the file is
            written on the first write; a missing default key file is created now).
            With ``create=False`` a missing store file raises :class:`StoreError`.
        kdf_params: cost of a NEW passphrase store (:class:`Argon2idParams` or
            :class:`ScryptParams`); an existing store's header always decides. Costs
            below the floor (Argon2id 19 MiB / 2 passes, scrypt N=2**17 / r=8) raise
            :class:`StoreValueError`.
        _allow_weak_kdf_for_tests: accept ``kdf_params`` below that floor. Only for test
            suites that need fast KDFs; never in production.

    The path is resolved once (``os.path.realpath``): a symlinked store path keeps working,
    writes replace the link's target, and :attr:`path` is the resolved path. Directories and
    key files that let other users read the key or replace the store raise
    :class:`~faceunlock.errors.InsecurePermissionsError` (see ``docs/STORE.md``).

    At most one of ``key``, ``passphrase``, ``key_file`` may be given; with none, the
    default key file is used. Opening an existing store authenticates its header and
    file MAC immediately (wrong key → :class:`StoreIntegrityError`); a missing key file for
    an existing store raises :class:`StoreError` and no new key is ever made for it.

    All methods are safe across threads and processes (``fcntl.flock`` on ``path + ".lock"``).
    """

    path: Path

    def __init__(
        self,
        path: PathLike,
        *,
        key: bytes | None = None,
        passphrase: str | bytes | None = None,
        key_file: PathLike | None = None,
        create: bool = True,
        kdf_params: KdfParams | None = None,
        _allow_weak_kdf_for_tests: bool = False,
    ) -> None:
        given = Path(os.fspath(path))
        if given.name in ("", ".", ".."):
            raise StoreValueError("store path must name a file")
        # Resolved once, so that a symlinked path keeps naming the same file: writes replace
        # the target (not the link) and the default key file name does not change.
        self.path = Path(os.path.realpath(given))
        if os.path.isdir(self.path):
            raise StoreValueError(f"store path {self.path} is a directory; name a file in it (e.g. default.fus)")
        self._allow_weak_kdf = bool(_allow_weak_kdf_for_tests)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._att_path = self.path.with_name(self.path.name + ".att")
        self._kdf_cache: dict[tuple[int, int, int, int, bytes], bytes] = {}
        exists = self.path.exists()
        if not exists and not create:
            raise StoreError(f"store file not found: {self.path}")
        self._set_source(key=key, passphrase=passphrase, key_file=key_file, kdf_params=kdf_params)
        _check_store_dir(self.path.parent)
        if exists:
            _check_store_file(self.path)
        elif self._kdf_params is not None:
            _check_kdf_floor(self._kdf_params, self._allow_weak_kdf)
        if self._key_file is not None:
            if exists:
                if not self._key_file.exists():
                    raise StoreError(
                        f"key file is missing: {self._key_file} (the store exists; refusing to "
                        "create a new key for it — pass key_file=, key= or passphrase=)"
                    )
                _check_key_dir(self._key_file.parent)
                with _dir_lock(self._key_file.parent):
                    _remove_stale_temps(self._key_file)  # a crashed creation's link to the key
                _read_key_file(self._key_file)
            else:
                self._ensure_key_file(self._key_file)
        if exists:
            with _flock(self._lock_path, exclusive=False):
                data = self._read()
                if data is not None:
                    self._open(data)

    # ---- key sources
    def _set_source(
        self,
        *,
        key: bytes | None,
        passphrase: str | bytes | None,
        key_file: PathLike | None,
        kdf_params: KdfParams | None,
    ) -> None:
        given = sum(x is not None for x in (key, passphrase, key_file))
        if given > 1:
            raise StoreValueError("give at most one of key=, passphrase=, key_file=")
        self._key: bytes | None = None
        self._passphrase: bytes | None = None
        self._key_file: Path | None = None
        self._kdf_params: KdfParams | None = None
        if key is not None:
            if not isinstance(key, (bytes, bytearray, memoryview)):
                raise StoreValueError("key must be bytes")
            kb = bytes(key)
            if len(kb) != KEY_BYTES:
                raise StoreValueError(f"key must be exactly {KEY_BYTES} bytes (AES-256)")
            self._key = kb
        elif passphrase is not None:
            if isinstance(passphrase, str):
                pb = unicodedata.normalize("NFC", passphrase).encode("utf-8")
            elif isinstance(passphrase, (bytes, bytearray, memoryview)):
                pb = bytes(passphrase)
            else:
                raise StoreValueError("passphrase must be str or bytes")
            if not pb:
                raise StoreValueError("passphrase must not be empty")
            if kdf_params is None:
                kdf_params = Argon2idParams() if argon2id_available() else ScryptParams()
            if not isinstance(kdf_params, (Argon2idParams, ScryptParams)):
                raise StoreValueError("kdf_params must be Argon2idParams or ScryptParams")
            if isinstance(kdf_params, Argon2idParams) and not argon2id_available():
                warnings.warn("Argon2id unavailable; using scrypt", stacklevel=3)
                kdf_params = ScryptParams()
            self._passphrase = pb
            self._kdf_params = kdf_params
        else:
            self._key_file = Path(os.fspath(key_file)) if key_file is not None else default_key_path(self.path)
        self._new_salt = secrets.token_bytes(SALT_BYTES)

    def _source_name(self) -> str:
        if self._key is not None:
            return "key"
        if self._passphrase is not None:
            return "passphrase"
        return "key file"

    @staticmethod
    def _ensure_key_file(path: Path) -> None:
        """Create a random 256-bit key file (0600 in a 0700 dir) unless one exists.

        Runs under the key directory's lock, which also removes temp files of this key file
        left by a crashed creator (each is a hard link to a key).
        """
        try:
            _makedirs_private(path.parent)
        except OSError as e:
            raise StoreError(f"cannot create key directory {path.parent}: {e.strerror}") from None
        _check_key_dir(path.parent)
        with _dir_lock(path.parent):
            _remove_stale_temps(path)
            if path.exists():
                _read_key_file(path)
                return
            try:
                _write_new_file(path, secrets.token_bytes(KEY_BYTES), replace=False)
            except FileExistsError:  # another process won the race; use its key
                _read_key_file(path)
            except OSError as e:
                raise StoreError(f"cannot create key file {path}: {e.strerror}") from None

    def _new_header(self) -> tuple[_Header, bytes]:
        """Header and master key for a store file that does not exist yet."""
        if self._passphrase is not None:
            p = self._kdf_params
            assert p is not None
            _check_kdf_floor(p, self._allow_weak_kdf)
            if isinstance(p, Argon2idParams):
                h = _Header(KDF_ARGON2ID, p.memory_kib, p.iterations, p.lanes, self._new_salt)
            else:
                assert isinstance(p, ScryptParams)
                h = _Header(KDF_SCRYPT, p.log2_n, p.r, p.p, self._new_salt)
            return h, self._master_for(h)[0]
        h = _Header(KDF_NONE, 0, 0, 0, self._new_salt)
        if self._key is not None:
            return h, self._key
        assert self._key_file is not None
        self._ensure_key_file(self._key_file)
        return h, _read_key_file(self._key_file)[-1]

    def _master_for(self, h: _Header) -> list[bytes]:
        """Candidate master keys for a (bounds-checked) header."""
        if self._passphrase is not None:
            if h.kdf == KDF_NONE:
                raise _integrity()
            ck = (h.kdf, h.p1, h.p2, h.p3, h.salt)
            if ck not in self._kdf_cache:
                self._kdf_cache[ck] = _derive_passphrase(self._passphrase, *ck)
            return [self._kdf_cache[ck]]
        if h.kdf != KDF_NONE:
            raise _integrity()
        if self._key is not None:
            return [self._key]
        assert self._key_file is not None
        return _read_key_file(self._key_file)

    # ---- reading & authenticating
    def _read(self) -> bytes | None:
        """The whole store file (None when missing): one read of its size, no chunk copies."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"cannot read store {self.path}: {e.strerror}") from None
        try:
            size = os.fstat(fd).st_size
            if size > MAX_FILE_BYTES:
                raise _integrity()
            first = os.read(fd, size + 1)  # regular files: all of it at once
            if len(first) <= size and not os.read(fd, 1):
                return first
            chunks, total = [first], len(first)
            while True:  # a short read, or a file that grew since fstat
                b = os.read(fd, 1 << 20)
                if not b:
                    break
                chunks.append(b)
                total += len(b)
                if total > MAX_FILE_BYTES:
                    raise _integrity()
            return b"".join(chunks)
        finally:
            os.close(fd)

    def _open(self, data: bytes) -> _Opened:
        """Authenticate header (key check) and whole-file MAC; parse the record table."""
        h = _parse_header(data)
        fixed = data[:_FIXED]
        check = data[_FIXED:_HEADER_LEN]
        chosen: tuple[bytes, _Keys] | None = None
        for master in self._master_for(h):
            k = _subkeys(master, h.salt)
            if hmac.compare_digest(_hmac(k.check, fixed), check):
                chosen = (master, k)
        if chosen is None:
            raise _integrity()
        master, keys = chosen
        if not hmac.compare_digest(_hmac(keys.mac, memoryview(data)[:-MAC_BYTES]), data[-MAC_BYTES:]):
            raise _integrity()
        op = _Opened(h, bytes(data[:_HEADER_LEN]), keys, master, _parse_entries(data), bytes(data[-MAC_BYTES:]))
        self._authenticated = (op.header_bytes, keys)  # for update_counters' fast path
        return op

    @staticmethod
    def _unseal(op: _Opened, e: _Entry) -> tuple[str, UserRecord]:
        try:
            pt = AESGCM(op.keys.enc).decrypt(e.nonce, e.ct, op.header_bytes + e.tag)
        except InvalidTag:
            raise _integrity() from None
        user, rec = _decode_record(pt)
        try:
            raw = user.encode("utf-8")
        except UnicodeEncodeError:
            raise _integrity() from None
        if not hmac.compare_digest(_hmac(op.keys.uid, raw), e.tag):
            raise _integrity()
        c = op.att.get(e.tag)
        if c is not None:  # newer attempt counters from the .att file
            rec.failures, rec.locked_until, rec.permanent_lock, rec.last_attempt = c
        return user, rec

    @staticmethod
    def _seal(op: _Opened, user_raw: bytes, plaintext: bytes) -> _Entry:
        tag = _hmac(op.keys.uid, user_raw)
        nonce = secrets.token_bytes(NONCE_BYTES)
        ct = AESGCM(op.keys.enc).encrypt(nonce, plaintext, op.header_bytes + tag)
        return _Entry(tag, nonce, ct)

    @staticmethod
    def _serialize(op: _Opened) -> bytes:
        parts = [op.header_bytes, _COUNT.pack(len(op.entries))]
        for tag in sorted(op.entries):
            e = op.entries[tag]
            parts.append(_ENTRY.pack(e.tag, e.nonce, len(e.ct)))
            parts.append(e.ct)
        body = b"".join(parts)
        return body + _hmac(op.keys.mac, body)

    @staticmethod
    def _authenticate_rest(op: _Opened, done: set[bytes]) -> None:
        """AES-GCM-check every record whose tag is not in ``done`` (without decoding it).

        The whole-file MAC has already authenticated every byte; this also re-checks each
        record's own seal (its AD binds the user tag and header), so a write never vouches
        for a record it has not checked, at the cost of one AES-GCM pass, not a decode.
        """
        aes = AESGCM(op.keys.enc)
        hb = op.header_bytes
        for t, e in op.entries.items():
            if t in done:
                continue
            try:
                aes.decrypt(e.nonce, e.ct, hb + t)
            except InvalidTag:
                raise _integrity() from None

    def _empty(self) -> _Opened:
        h, master = self._new_header()
        keys = _subkeys(master, h.salt)
        fixed = h.fixed()
        return _Opened(h, fixed + _hmac(keys.check, fixed), keys, master, {})

    def _read_opened(self) -> _Opened | None:
        data = self._read()
        if data is None:
            return None
        op = self._open(data)
        self._read_att(op)
        return op

    # ---- attempt counters (<store>.att)
    def _read_att(self, op: _Opened, *, check_tags: bool = True) -> None:
        """Load the attempt-counter overlay into ``op.att`` when the .att file belongs to
        this store file. Any byte changed in it is an integrity error; an authentic file
        bound to an earlier store file (its counters were folded in since) is ignored."""
        try:
            fd = os.open(self._att_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return
        except OSError as e:
            raise StoreError(f"cannot read attempt counters {self._att_path}: {e.strerror}") from None
        try:
            data = os.read(fd, _ATT_MAX + 1)
        finally:
            os.close(fd)
        m = len(ATT_MAGIC)
        if not _ATT_MIN <= len(data) <= _ATT_MAX or data[:m] != ATT_MAGIC:
            raise _integrity()
        bound, nonce, ct = data[m : m + MAC_BYTES], data[m + MAC_BYTES : m + MAC_BYTES + NONCE_BYTES], data[m + MAC_BYTES + NONCE_BYTES :]
        try:
            pt = AESGCM(op.keys.enc).decrypt(nonce, ct, ATT_MAGIC + op.header_bytes + bound)
        except InvalidTag:
            raise _integrity() from None
        if not hmac.compare_digest(bound, op.mac):
            return  # stale: written for an earlier store file, whose writer folded it in
        (n,) = _COUNT.unpack_from(pt, 0)
        if len(pt) != _COUNT.size + n * _ATT_ENTRY.size:
            raise _integrity()
        att: dict[bytes, tuple[int, float, bool, float]] = {}
        prev = b""
        for tag, failures, until, perm, last in _ATT_ENTRY.iter_unpack(pt[_COUNT.size :]):
            if tag <= prev or (check_tags and tag not in op.entries) or perm > 1 or not (math.isfinite(until) and math.isfinite(last)):
                raise _integrity()
            att[tag] = (failures, until, bool(perm), last)
            prev = tag
        op.att = att

    def _write_att(self, op: _Opened, changes: dict[bytes, Any]) -> None:
        """Write ``op.att`` plus ``changes`` (lockout fields only) as the new .att file, bound
        to the store file's MAC. The store file itself is not rewritten."""
        att = dict(op.att)
        for tag, rec in changes.items():
            att[tag] = _lockout_fields(rec)
        body = b"".join(_ATT_ENTRY.pack(t, *att[t]) for t in sorted(att))
        nonce = secrets.token_bytes(NONCE_BYTES)
        ct = AESGCM(op.keys.enc).encrypt(nonce, _COUNT.pack(len(att)) + body, ATT_MAGIC + op.header_bytes + op.mac)
        _remove_stale_temps(self._att_path)
        try:
            _write_new_file(self._att_path, ATT_MAGIC + op.mac + nonce + ct, replace=True)
        except OSError as e:
            raise StoreError(f"cannot write attempt counters {self._att_path}: {e.strerror}") from None
        op.att = att

    def _drop_att(self, *, durable: bool) -> None:
        try:
            os.unlink(self._att_path)
        except FileNotFoundError:
            return
        except OSError as e:
            raise StoreError(f"cannot remove attempt counters {self._att_path}: {e.strerror}") from None
        if durable:
            _fsync_dir(self._att_path.parent)

    # ---- writing
    def _cleanup_temps(self) -> None:
        """Remove temp files of THIS store left by crashed writers (call under the EX lock)."""
        prefix = _TMP_PREFIX.format(name=self.path.name)
        try:
            names = os.listdir(self.path.parent)
        except OSError:
            return
        for n in names:
            if n.startswith(prefix) and _TMP_SUFFIX_RE.match(n[len(prefix) :]):
                try:
                    os.unlink(self.path.parent / n)
                except OSError:
                    pass

    def _commit(self, op: _Opened, *, drop_att_first: bool = False) -> None:
        for tag in op.att:  # fold the attempt counters into the records being rewritten
            e = op.entries.get(tag)
            if e is not None and tag not in op.fresh:
                user, rec = self._unseal(op, e)
                op.entries[tag] = self._seal(op, user.encode("utf-8"), _encode_record(user, rec))
        op.att = {}
        _check_file_limits([len(e.ct) for e in op.entries.values()])  # never a file open() rejects
        data = self._serialize(op)
        self._cleanup_temps()
        if drop_att_first:  # rekey: an .att file under the old key must never outlive it
            self._drop_att(durable=True)
        try:
            _write_new_file(self.path, data, replace=True)
        except OSError as e:
            raise StoreError(f"cannot write store {self.path}: {e.strerror}") from None
        self._drop_att(durable=False)  # now stale (bound to the old file's MAC) if it survived a crash

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        try:
            _makedirs_private(self.path.parent)
        except OSError as e:
            raise StoreError(f"cannot create store directory {self.path.parent}: {e.strerror}") from None
        _check_store_dir(self.path.parent)
        with _flock(self._lock_path, exclusive=True):
            yield

    # ---- public API
    def users(self) -> list[str]:
        """Sorted ids of all enrolled users (decrypts and authenticates every record)."""
        with _flock(self._lock_path, exclusive=False):
            op = self._read_opened()
            if op is None:
                return []
            return sorted(self._unseal(op, e)[0] for e in op.entries.values())

    def records(self) -> dict[str, UserRecord]:
        """Every user's record, decrypted and authenticated, from one read of the file
        (sorted by user id). ``get`` per user would read and authenticate the file once
        per user."""
        with _flock(self._lock_path, exclusive=False):
            op = self._read_opened()
            if op is None:
                return {}
            return dict(sorted(self._unseal(op, e) for e in op.entries.values()))

    def get(self, user: str) -> UserRecord | None:
        """The user's record, decrypted and authenticated; ``None`` when not enrolled."""
        raw = _check_user(user)
        with _flock(self._lock_path, exclusive=False):
            op = self._read_opened()
            if op is None:
                return None
            e = op.entries.get(_hmac(op.keys.uid, raw))
            if e is None:
                return None
            found, rec = self._unseal(op, e)
            if found != user:
                raise _integrity()
            return rec

    def update(
        self, user: str, fn: Callable[[UserRecord | None], UserRecord | None]
    ) -> UserRecord | None:
        """Atomic read-modify-write of one user under one exclusive lock.

        The file is re-read inside the lock, ``fn`` gets the current record (or ``None``)
        and returns the new one; returning ``None`` deletes the user. ``fn`` must not call
        the store. Returns what ``fn`` returned. Nothing is written if ``fn`` raises.
        """
        raw = _check_user(user)
        with self._write_lock():
            op = self._read_opened()
            existed = op is not None
            if op is None:
                op = self._empty()
            tag = _hmac(op.keys.uid, raw)
            old = None
            e = op.entries.get(tag)
            if e is not None:
                found, old = self._unseal(op, e)
                if found != user:
                    raise _integrity()
            # Only this user's record is decoded; every other one is AES-GCM-checked (the
            # file MAC already covers all bytes): a write never vouches for unchecked bytes.
            self._authenticate_rest(op, {tag})
            new = fn(old)
            if _lockout_only(old, new):
                self._write_att(op, {tag: new})  # type: ignore[dict-item]
                return new
            if new is None:
                if old is None:
                    return None
                del op.entries[tag]
            else:
                op.entries[tag] = self._seal(op, raw, _encode_record(user, new))
                op.fresh.add(tag)
            if not existed and not op.entries:
                return new
            self._commit(op)
            return new

    def update_many(
        self,
        users: Iterable[str] | None,
        fn: Callable[[dict[str, UserRecord | None]], Mapping[str, UserRecord | None] | None],
    ) -> dict[str, UserRecord | None]:
        """Atomic read-modify-write of several users: one exclusive lock, one authenticated
        read of the file, at most one write.

        ``users`` lists the users to read (``None`` = every enrolled user). Only their
        records are decrypted and decoded; the whole file is still authenticated (file MAC)
        and, before a write, every other record's AES-GCM seal is checked. ``fn`` gets
        ``{user: record or None}`` (a new dict it may keep) and returns the CHANGES only,
        ``{user: new record, or None to delete}`` (users it may change: those listed, or any
        with ``users=None``); an empty or ``None`` result writes nothing. ``fn`` must not call
        the store; nothing is written if it raises. Returns the records after the change
        (for the listed users, or every user with ``users=None``).
        """
        wanted = None if users is None else {u: _check_user(u) for u in users}
        with self._write_lock():
            op = self._read_opened()
            existed = op is not None
            if op is None:
                op = self._empty()
            current: dict[str, UserRecord | None] = {}
            done: set[bytes] = set()
            if wanted is None:
                for t, e in op.entries.items():
                    found, r = self._unseal(op, e)
                    current[found] = r
                    done.add(t)
            else:
                for u, raw in wanted.items():
                    t = _hmac(op.keys.uid, raw)
                    e = op.entries.get(t)
                    if e is None:
                        current[u] = None
                        continue
                    found, r = self._unseal(op, e)
                    if found != u:
                        raise _integrity()
                    current[u] = r
                    done.add(t)
            changes = fn(dict(current)) or {}
            if not changes:
                return current
            for u in changes:
                if wanted is not None and u not in wanted:
                    raise StoreValueError(f"update_many: {u!r} was not among the users read")
            if all(_lockout_only(current.get(u), new) for u, new in changes.items()):
                self._write_att(op, {_hmac(op.keys.uid, _check_user(u)): new for u, new in changes.items()})  # type: ignore[misc]
                current.update(changes)
                return current
            sealed: dict[bytes, _Entry | None] = {}
            for u, new in changes.items():
                raw = _check_user(u)
                t = _hmac(op.keys.uid, raw)
                sealed[t] = None if new is None else self._seal(op, raw, _encode_record(u, new))
            op.fresh.update(t for t, ent in sealed.items() if ent is not None)
            self._authenticate_rest(op, done)
            for t, ent in sealed.items():
                if ent is None:
                    op.entries.pop(t, None)
                else:
                    op.entries[t] = ent
            current.update(changes)
            if wanted is None:
                current = {u: r for u, r in current.items() if r is not None}
            if not existed and not op.entries:
                return current
            self._commit(op)
            return current

    def update_counters(
        self,
        users: Iterable[str],
        fn: Callable[[dict[str, Counters | None]], Mapping[str, Counters] | None],
    ) -> dict[str, Counters | None]:
        """Atomic read-modify-write of the lockout state of ``users`` alone.

        ``fn`` gets ``{user: Counters or None (not enrolled)}`` and returns the changes
        (enrolled users only); they are written to the attempt-counter file. When every user
        already has counters there bound to the current store file, and the store's header is
        one this object has authenticated, only that small file is read and written (plus the
        store file's first 72 and last 32 bytes); otherwise this is :meth:`update_many`.
        The store file is not authenticated on the fast path — it is not vouched for either:
        the counter file binds its MAC, and every full read (any ``get``/``update``) checks it.
        """
        wanted = {u: _check_user(u) for u in users}
        got = self._update_counters_fast(wanted, fn)
        if got is not None:
            return got

        def full(recs: dict[str, UserRecord | None]) -> dict[str, UserRecord | None]:
            cur = {u: None if r is None else Counters(*_lockout_fields(r)) for u, r in recs.items()}
            out: dict[str, UserRecord | None] = {}
            for u, c in (fn(dict(cur)) or {}).items():
                r = recs.get(u)
                if r is None:
                    raise StoreValueError(f"update_counters: {u!r} is not enrolled")
                f = _lockout_fields(c)  # type: ignore[arg-type]
                out[u] = UserRecord(templates=r.templates, embedder=r.embedder, created=r.created, failures=f[0],
                                    locked_until=f[1], permanent_lock=f[2], last_attempt=f[3], meta=r.meta)
            return out

        res = self.update_many(list(wanted), full)
        return {u: None if r is None else Counters(*_lockout_fields(r)) for u, r in res.items()}

    def _update_counters_fast(self, wanted: dict[str, bytes], fn) -> dict[str, Counters | None] | None:  # type: ignore[no-untyped-def]
        known = getattr(self, "_authenticated", None)
        if known is None or not self._att_path.exists():
            return None
        with self._write_lock():
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
            try:
                size = os.fstat(fd).st_size
                if not _MIN_FILE <= size <= MAX_FILE_BYTES:
                    return None
                head = os.pread(fd, _HEADER_LEN, 0)
                mac = os.pread(fd, MAC_BYTES, size - MAC_BYTES)
            finally:
                os.close(fd)
            header_bytes, keys = known
            if head != header_bytes or len(mac) != MAC_BYTES:
                return None
            op = _Opened(None, header_bytes, keys, b"", {}, mac)  # type: ignore[arg-type]
            self._read_att(op, check_tags=False)
            tags = {u: _hmac(keys.uid, raw) for u, raw in wanted.items()}
            if not all(t in op.att for t in tags.values()):
                return None
            current: dict[str, Counters | None] = {u: Counters(*op.att[t]) for u, t in tags.items()}
            changes = fn(dict(current)) or {}
            for u in changes:
                if u not in wanted:
                    raise StoreValueError(f"update_counters: {u!r} was not among the users read")
            if changes:
                self._write_att(op, {tags[u]: c for u, c in changes.items()})  # type: ignore[misc]
                current.update({u: Counters(*op.att[tags[u]]) for u in changes})
            return current

    def put(self, user: str, record: UserRecord) -> None:
        """Store (insert or replace) the user's record; durable when this returns."""
        _check_user(user)
        _encode_record(user, record)  # validate before taking the lock
        self.update(user, lambda _old: record)

    def remove(self, user: str) -> bool:
        """Delete the user's biometric data; True if the user was enrolled.

        The record is dropped from a freshly written file (the old file is replaced, not
        overwritten in place; on flash/SSD/journaling filesystems old blocks may linger,
        but they only ever held ciphertext).
        """
        existed = False

        def drop(old: UserRecord | None) -> None:
            nonlocal existed
            existed = old is not None
            return None

        self.update(user, drop)
        return existed

    def verify(self) -> int:
        """Authenticate the whole file and decrypt every record; return the user count.

        Raises :class:`StoreIntegrityError` if anything fails. A missing file is an empty store (0).
        """
        with _flock(self._lock_path, exclusive=False):
            op = self._read_opened()
            if op is None:
                return 0
            seen = set()
            for e in op.entries.values():
                seen.add(self._unseal(op, e)[0])
            return len(seen)

    def rekey(
        self,
        *,
        key: bytes | None = None,
        passphrase: str | bytes | None = None,
        key_file: PathLike | None = None,
        kdf_params: KdfParams | None = None,
        _allow_weak_kdf_for_tests: bool = False,
    ) -> None:
        """Re-seal every record under a new key, atomically (one ``os.replace``).

        The new key source is given like in the constructor (none = default key file).
        A new salt is always drawn. With a key file:

        * if it is the store's current key file, a fresh random key replaces it crash-safely
          (the file holds old ‖ new key until the store has been replaced);
        * otherwise the file must not exist yet and is created with a fresh random key.

        When the store used its default key file and no longer does, that file is deleted
        (the old key must not outlive the rekey). Explicit old key files are left to the caller.
        Temp files of the old and new key file left by a crashed writer (copies of a key) are
        deleted under the key directory's lock. A new passphrase's ``kdf_params`` must meet
        the same floor as in the constructor.
        """
        old_key_file = self._key_file
        old_state = (
            self._key, self._passphrase, self._key_file, self._kdf_params, self._new_salt, self._allow_weak_kdf
        )
        probe = TemplateStore.__new__(TemplateStore)
        probe.path = self.path
        probe._kdf_cache = {}
        probe._allow_weak_kdf = bool(_allow_weak_kdf_for_tests)
        probe._set_source(key=key, passphrase=passphrase, key_file=key_file, kdf_params=kdf_params)
        if probe._kdf_params is not None:
            _check_kdf_floor(probe._kdf_params, probe._allow_weak_kdf)
        rotating = (
            probe._key_file is not None
            and old_key_file is not None
            and os.path.realpath(probe._key_file) == os.path.realpath(old_key_file)
        )
        if probe._key_file is not None and not rotating and probe._key_file.exists():
            raise StoreError(f"refusing to overwrite existing key file {probe._key_file}")
        with self._write_lock():
            op = self._read_opened()
            plain: list[tuple[bytes, bytes]] = []
            if op is not None:
                for e in op.entries.values():
                    user, rec = self._unseal(op, e)
                    plain.append((user.encode("utf-8"), _encode_record(user, rec)))
            new_key: bytes | None = None
            if probe._key_file is not None:
                new_key = secrets.token_bytes(KEY_BYTES)
                try:
                    _makedirs_private(probe._key_file.parent)
                except OSError as e:
                    raise StoreError(f"cannot create key directory {probe._key_file.parent}: {e.strerror}") from None
                _check_key_dir(probe._key_file.parent)
                with _dir_lock(probe._key_file.parent):
                    _remove_stale_temps(probe._key_file)
                    if rotating:
                        assert op is None or len(op.master) == KEY_BYTES
                        current = op.master if op is not None else _read_key_file(probe._key_file)[-1]
                        _write_new_file(probe._key_file, current + new_key, replace=True)
                    else:
                        _write_new_file(probe._key_file, new_key, replace=False)
            try:
                self._key, self._passphrase, self._key_file = probe._key, probe._passphrase, probe._key_file
                self._kdf_params, self._new_salt = probe._kdf_params, secrets.token_bytes(SALT_BYTES)
                self._allow_weak_kdf = probe._allow_weak_kdf
                if new_key is not None:  # seal with the new key (the file may hold old ‖ new)
                    h = _Header(KDF_NONE, 0, 0, 0, self._new_salt)
                    keys = _subkeys(new_key, h.salt)
                    fixed = h.fixed()
                    new_op = _Opened(h, fixed + _hmac(keys.check, fixed), keys, new_key, {})
                else:
                    new_op = self._empty()
                for raw, pt in plain:
                    ent = self._seal(new_op, raw, pt)
                    new_op.entries[ent.tag] = ent
                if op is not None:
                    self._commit(new_op, drop_att_first=True)
            except BaseException:
                (
                    self._key, self._passphrase, self._key_file, self._kdf_params, self._new_salt,
                    self._allow_weak_kdf,
                ) = old_state
                raise
            if rotating and new_key is not None:
                assert probe._key_file is not None
                with _dir_lock(probe._key_file.parent):
                    _write_new_file(probe._key_file, new_key, replace=True)
                    _remove_stale_temps(probe._key_file)
            if old_key_file is not None and not rotating:
                with _dir_lock(old_key_file.parent):
                    if os.path.realpath(old_key_file) == os.path.realpath(default_key_path(self.path)):
                        try:
                            os.unlink(old_key_file)
                            _fsync_dir(old_key_file.parent)
                        except OSError:
                            pass
                    _remove_stale_temps(old_key_file)  # a crashed writer's copies of the old key
            self._new_salt = secrets.token_bytes(SALT_BYTES)

    def __repr__(self) -> str:
        return f"TemplateStore(path={os.fspath(self.path)!r}, key_source={self._source_name()!r})"

    __str__ = __repr__

    def __getstate__(self) -> Any:  # keys must not leak through pickling
        raise TypeError("TemplateStore cannot be pickled")
