"""Tests of faceunlock.store: authentication, crash safety, concurrency, key handling."""

from __future__ import annotations

import ast
import os
import random
import select
import signal
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _store_worker as worker  # noqa: E402

from faceunlock import store as store_mod  # noqa: E402
from faceunlock.errors import FaceUnlockError, StoreError, StoreIntegrityError  # noqa: E402
from faceunlock.store import (  # noqa: E402
    MAGIC,
    Argon2idParams,
    ScryptParams,
    StoreValueError,
    TemplateStore,
    UserRecord,
    default_key_path,
    default_store_path,
)

KEY = worker.KEY
KEY2 = bytes(range(100, 132))
CHEAP_ARGON = Argon2idParams(memory_kib=8, iterations=1, lanes=1)
# Below the production floor, for speed: every new store made with it must opt out explicitly.
WEAK_KDF = dict(kdf_params=CHEAP_ARGON, _allow_weak_kdf_for_tests=True)
REPO = Path(__file__).resolve().parent.parent
HEADER_LEN = 72
ENTRY = struct.Struct(">32s12sI")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Default key files go to a private temporary XDG_DATA_HOME, never the real one."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def unit(k: int = 3, d: int = 8, seed: int = 0) -> np.ndarray:
    return worker.unit_rows(seed, k, d)


def rec(k: int = 3, d: int = 8, seed: int = 0, **kw) -> UserRecord:
    return UserRecord(templates=unit(k, d, seed), embedder="test-emb", created=1000.0 + seed, **kw)


def small_store(path: Path, key: bytes = KEY) -> bytes:
    s = TemplateStore(path, key=key)
    s.put("alice", rec(1, 4, 1))
    s.put("bob", rec(1, 4, 2))
    return path.read_bytes()


def entries(data: bytes) -> list[tuple[int, bytes, bytes, bytes]]:
    """(offset, tag, nonce, ct) of each record entry, per docs/STORE.md."""
    (n,) = struct.unpack_from(">I", data, HEADER_LEN)
    off = HEADER_LEN + 4
    out = []
    for _ in range(n):
        tag, nonce, ln = ENTRY.unpack_from(data, off)
        out.append((off, tag, nonce, data[off + ENTRY.size : off + ENTRY.size + ln]))
        off += ENTRY.size + ln
    assert off == len(data) - 32
    return out


def build(header: bytes, ents: list[tuple[bytes, bytes, bytes]], mac_key: bytes | None) -> bytes:
    body = header + struct.pack(">I", len(ents)) + b"".join(ENTRY.pack(t, n, len(c)) + c for t, n, c in ents)
    mac = store_mod._hmac(mac_key, body) if mac_key else b"\0" * 32
    return body + mac


def assert_all_ops_fail(path: Path, key: bytes = KEY) -> None:
    """Every way of reading/writing a bad file raises StoreIntegrityError and changes nothing."""
    before = path.read_bytes()
    with pytest.raises(StoreIntegrityError):
        TemplateStore(path, key=key)
    assert path.read_bytes() == before


# ----------------------------------------------------------------------------- basics
def test_roundtrip_and_api(tmp_path: Path) -> None:
    p = tmp_path / "s" / "a.fus"
    s = TemplateStore(p, key=KEY)
    assert s.users() == [] and s.get("x") is None and s.verify() == 0
    assert not p.exists()  # created on first write
    r = rec(5, 128, 1, meta={"poses": ["front", "left"], "n": 5})
    s.put("zed", r)
    s.put("alice", rec(2, 128, 2))
    assert s.users() == ["alice", "zed"]
    got = s.get("zed")
    assert got == r and got is not r
    assert got.templates.dtype == np.float32 and got.templates.shape == (5, 128)
    assert got.meta == {"poses": ["front", "left"], "n": 5}
    assert s.verify() == 2
    recs = s.records()  # every record from one read, in user order, equal to get()
    assert list(recs) == ["alice", "zed"] and recs == {u: s.get(u) for u in ("alice", "zed")}
    # update: fn sees current value; returning None deletes
    seen = []
    out = s.update("alice", lambda old: (seen.append(old), UserRecord(old.templates, "e2", 1.0, failures=3))[1])
    assert seen[0] == rec(2, 128, 2) and out.failures == 3 and s.get("alice").failures == 3
    assert s.update("nobody", lambda old: None) is None
    assert s.update("alice", lambda old: None) is None and s.users() == ["zed"]
    assert s.remove("zed") is True and s.remove("zed") is False
    assert s.users() == [] and s.verify() == 0 and s.records() == {}
    assert TemplateStore(p, key=KEY).users() == []


def test_create_false_and_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        TemplateStore(tmp_path / "nope.fus", key=KEY, create=False)
    s = TemplateStore(tmp_path / "deep" / "er" / "x.fus", key=KEY)
    assert s.users() == []
    s.put("u", rec())
    assert stat.S_IMODE(os.stat(tmp_path / "deep" / "er").st_mode) == 0o700


@pytest.mark.parametrize("user", ["", "a\0b", "x" * 257, "é" * 129, 5, None, b"bytes", "\ud800"])
def test_bad_user_ids(tmp_path: Path, user) -> None:
    s = TemplateStore(tmp_path / "a.fus", key=KEY)
    for call in (lambda: s.put(user, rec()), lambda: s.get(user), lambda: s.remove(user)):
        with pytest.raises(StoreValueError) as ei:
            call()
        assert isinstance(ei.value, ValueError) and isinstance(ei.value, StoreError)


def test_good_user_ids(tmp_path: Path) -> None:
    s = TemplateStore(tmp_path / "a.fus", key=KEY)
    ids = ["x" * 256, "é" * 128, "用户", " spaces ", "a/b\\c"]
    for i, u in enumerate(ids):
        s.put(u, rec(seed=i))
    assert s.users() == sorted(ids)
    assert all(s.get(u) == rec(seed=i) for i, u in enumerate(ids))


@pytest.mark.parametrize(
    "bad",
    [
        dict(templates=np.ones((2, 4), np.float32)),  # not unit norm
        dict(templates=np.full((1, 4), np.nan, np.float32)),
        dict(templates=unit(3, 8)[0]),  # 1-D
        dict(templates=np.zeros((0, 8), np.float32)),
        dict(meta={"a": object()}),
        dict(meta={"a": float("inf")}),
        dict(created=float("nan")),
        dict(failures=-1),
        dict(permanent_lock="yes"),
    ],
)
def test_bad_records_rejected_and_file_unchanged(tmp_path: Path, bad) -> None:
    p = tmp_path / "a.fus"
    s = TemplateStore(p, key=KEY)
    s.put("u", rec())
    before = p.read_bytes()
    fields = dict(templates=unit(), embedder="e", created=1.0)
    fields.update(bad)
    with pytest.raises(StoreValueError):
        s.put("u", UserRecord(**fields))
    assert p.read_bytes() == before


def test_key_argument_validation(tmp_path: Path) -> None:
    for k in (b"short", b"x" * 33, b"", "x" * 32):
        with pytest.raises(StoreValueError) as ei:
            TemplateStore(tmp_path / "a.fus", key=k)
        assert isinstance(ei.value, ValueError)
    with pytest.raises(StoreValueError):
        TemplateStore(tmp_path / "a.fus", key=KEY, passphrase="pw")
    with pytest.raises(StoreValueError):
        TemplateStore(tmp_path / "a.fus", passphrase="")
    with pytest.raises(StoreValueError):
        Argon2idParams(memory_kib=1 << 30)
    TemplateStore(tmp_path / "a.fus", key=bytearray(KEY))  # bytes-like is fine


def test_update_fn_raising_writes_nothing_and_reentrancy_refused(tmp_path: Path) -> None:
    p = tmp_path / "a.fus"
    s = TemplateStore(p, key=KEY)
    s.put("u", rec())
    before = p.read_bytes()

    def boom(old):
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        s.update("u", boom)
    assert p.read_bytes() == before
    with pytest.raises(StoreError):
        s.update("u", lambda old: s.get("v"))
    assert p.read_bytes() == before
    assert s.get("u") == rec()  # lock released


# ----------------------------------------------------------------------------- integrity
def test_every_flipped_byte_detected(tmp_path: Path) -> None:
    p = tmp_path / "a.fus"
    good = small_store(p)
    assert len(good) < 2000
    messages = set()
    for i in range(len(good)):
        for x in (0x01, 0x80, 0xFF):
            bad = bytearray(good)
            bad[i] ^= x
            p.write_bytes(bytes(bad))
            with pytest.raises(StoreIntegrityError) as ei:
                TemplateStore(p, key=KEY).verify()
            messages.add(str(ei.value))
            assert p.read_bytes() == bytes(bad)
    assert len(messages) == 1


def test_flipped_byte_after_open_detected_by_every_operation(tmp_path: Path) -> None:
    p = tmp_path / "a.fus"
    good = small_store(p)
    s = TemplateStore(p, key=KEY)  # opened while good
    ops = [
        s.users,
        s.records,
        s.verify,
        lambda: s.get("alice"),
        lambda: s.get("carol"),
        lambda: s.put("carol", rec()),
        lambda: s.put("alice", rec()),
        lambda: s.update("bob", lambda r: r),
        lambda: s.remove("alice"),
        lambda: s.rekey(key=KEY2),
    ]
    for i in range(0, len(good), 3):
        bad = bytearray(good)
        bad[i] ^= 0x5A
        p.write_bytes(bytes(bad))
        for op in ops:
            with pytest.raises(StoreIntegrityError):
                op()
            assert p.read_bytes() == bytes(bad)
    p.write_bytes(good)
    assert s.users() == ["alice", "bob"]


def test_truncation_extension_and_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "a.fus"
    good = small_store(p)
    for n in range(len(good)):
        p.write_bytes(good[:n])
        assert_all_ops_fail(p)
    for extra in (b"\0", b"x" * 100, good[-32:]):
        p.write_bytes(good + extra)
        assert_all_ops_fail(p)
    p.write_bytes(good[:HEADER_LEN + 4] + good[-32:])  # records cut out
    assert_all_ops_fail(p)
    p.write_bytes(b"")
    assert_all_ops_fail(p)
    # an empty file opened by a store that was created before it appeared
    p.unlink()
    s = TemplateStore(p, key=KEY)
    p.write_bytes(b"")
    with pytest.raises(StoreIntegrityError):
        s.put("x", rec())
    assert p.read_bytes() == b""


def test_wrong_key_and_wrong_passphrase(tmp_path: Path) -> None:
    p = tmp_path / "a.fus"
    small_store(p)
    assert_all_ops_fail(p, key=KEY2)
    with pytest.raises(StoreIntegrityError):
        TemplateStore(p, passphrase="pw", kdf_params=CHEAP_ARGON)
    q = tmp_path / "b.fus"
    s = TemplateStore(q, passphrase="correct horse", **WEAK_KDF)
    s.put("u", rec())
    before = q.read_bytes()
    assert TemplateStore(q, passphrase="correct horse").get("u") == rec()
    for wrong in ("correct horsE", "correct horse ", b"correct hors"):
        with pytest.raises(StoreIntegrityError):
            TemplateStore(q, passphrase=wrong)
    with pytest.raises(StoreIntegrityError):
        TemplateStore(q, key=KEY)
    assert q.read_bytes() == before
    # the passphrase store's every byte is authenticated too (cheap KDF; +1 flips only)
    for i in range(len(before)):
        bad = bytearray(before)
        bad[i] ^= 0x01
        q.write_bytes(bytes(bad))
        with pytest.raises(StoreIntegrityError):
            TemplateStore(q, passphrase="correct horse").verify()


def test_passphrase_normalisation_and_bytes(tmp_path: Path) -> None:
    p = tmp_path / "a.fus"
    TemplateStore(p, passphrase="caf\u00e9", **WEAK_KDF).put("u", rec())
    assert TemplateStore(p, passphrase="cafe\u0301").users() == ["u"]  # NFD == NFC
    assert TemplateStore(p, passphrase="caf\u00e9".encode()).users() == ["u"]


def test_scrypt_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "_ARGON2_AVAILABLE", False)
    p = tmp_path / "a.fus"
    with pytest.warns(UserWarning):
        s = TemplateStore(p, passphrase="pw", **WEAK_KDF)
    s.put("u", rec())
    assert p.read_bytes()[10] == store_mod.KDF_SCRYPT
    assert TemplateStore(p, passphrase="pw").get("u") == rec()
    q = tmp_path / "b.fus"
    TemplateStore(
        q, passphrase="pw", kdf_params=ScryptParams(log2_n=4, r=1, p=1), _allow_weak_kdf_for_tests=True
    ).put("u", rec())
    with pytest.raises(StoreIntegrityError):
        TemplateStore(q, passphrase="pW")


def test_hostile_kdf_parameters_rejected_before_deriving(tmp_path: Path) -> None:
    p = tmp_path / "a.fus"
    TemplateStore(p, passphrase="pw", **WEAK_KDF).put("u", rec())
    good = p.read_bytes()
    for off, val in ((12, 0xFFFFFFFF), (12, 1 << 21), (16, 1000), (20, 0), (20, 1000)):
        bad = bytearray(good)
        struct.pack_into(">I", bad, off, val)
        p.write_bytes(bytes(bad))
        t = time.monotonic()
        with pytest.raises(StoreIntegrityError):
            TemplateStore(p, passphrase="pw")
        assert time.monotonic() - t < 1.0


def test_records_swapped_between_users(tmp_path: Path) -> None:
    p = tmp_path / "a.fus"
    good = small_store(p)
    (o1, t1, n1, c1), (o2, t2, n2, c2) = entries(good)
    header = good[:HEADER_LEN]
    # 1) plain swap of the sealed records: caught (file MAC and record AD)
    p.write_bytes(build(header, [(t1, n2, c2), (t2, n1, c1)], None))
    assert_all_ops_fail(p)
    # 2) even with a valid whole-file MAC (only a key holder could make one), the
    #    per-record AD binding the user tag still refuses the swap
    keys = store_mod._subkeys(KEY, header[24:40])
    p.write_bytes(build(header, [(t1, n2, c2), (t2, n1, c1)], keys.mac))
    s = TemplateStore(p, key=KEY)  # header and file MAC are fine
    for op in (s.users, s.verify, lambda: s.get("alice"), lambda: s.get("bob"), lambda: s.put("c", rec())):
        with pytest.raises(StoreIntegrityError):
            op()
    # 3) a record transplanted from another store under the same key is refused too
    q = tmp_path / "b.fus"
    other = small_store(q)
    (_, ot1, on1, oc1), _ = entries(other)
    # (entries sorted by tag, as a writer would store them: the tags of two stores are unrelated)
    p.write_bytes(build(header, sorted([(ot1, on1, oc1), (t2, n2, c2)], key=lambda e: e[0]), keys.mac))
    s = TemplateStore(p, key=KEY)
    with pytest.raises(StoreIntegrityError):
        s.verify()
    # 4) dropping a user with a valid MAC is not an integrity failure (MAC is keyed):
    p.write_bytes(build(header, [(t2, n2, c2)], keys.mac))
    assert TemplateStore(p, key=KEY).verify() == 1



@pytest.fixture(scope="module")
def valid_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    d = tmp_path_factory.mktemp("fuzz")
    p = d / "a.fus"
    return p, small_store(p)


def _open_all(p: Path) -> None:
    s = TemplateStore(p, key=KEY)
    s.verify()
    s.users()
    s.get("alice")


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=2000))
def test_fuzz_random_bytes(valid_file, data: bytes) -> None:
    p, good = valid_file
    p.write_bytes(data)
    with pytest.raises(StoreIntegrityError):
        _open_all(p)
    assert p.read_bytes() == data


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_fuzz_mutations(valid_file, data) -> None:
    p, good = valid_file
    buf = bytearray(good)
    for _ in range(data.draw(st.integers(1, 4), label="n_mutations")):
        kind = data.draw(st.sampled_from(["set", "insert", "delete", "splice"]))
        i = data.draw(st.integers(0, len(buf)))
        if kind == "set" and i < len(buf):
            buf[i] = data.draw(st.integers(0, 255))
        elif kind == "insert":
            buf[i:i] = data.draw(st.binary(min_size=1, max_size=40))
        elif kind == "delete":
            del buf[i : i + data.draw(st.integers(1, 40))]
        elif kind == "splice":  # copy a chunk of the file elsewhere
            j = data.draw(st.integers(0, len(good)))
            chunk = good[j : j + data.draw(st.integers(1, 60))]
            buf[i : i + len(chunk)] = chunk
    mutated = bytes(buf)
    p.write_bytes(mutated)
    if mutated == good:
        _open_all(p)
    else:
        with pytest.raises(StoreIntegrityError):
            _open_all(p)
    assert p.read_bytes() == mutated


def test_unmodified_file_opens(valid_file) -> None:
    p, good = valid_file
    p.write_bytes(good)
    _open_all(p)


# ----------------------------------------------------------------------------- secrecy & modes
def test_no_plaintext_templates_or_user_ids_on_disk(tmp_path: Path) -> None:
    p = tmp_path / "a.fus"
    s = TemplateStore(p)  # default key file
    templates = {}
    for i, u in enumerate(["alice", "bob", "carol-the-long-user-name"]):
        r = rec(7, 128, 100 + i, meta={"note": "meta-secret"})
        templates[u] = r.templates
        s.put(u, r)
    s.put("bob", rec(7, 128, 999))
    templates["bob-old"] = unit(7, 128, 101)
    data = p.read_bytes()
    for t in templates.values():
        raw = t.astype("<f4").tobytes()
        windows = {raw[j : j + 16] for j in range(0, len(raw) - 15)}
        assert not any(data[j : j + 16] in windows for j in range(len(data) - 15))
        assert raw[:16] not in data and raw[-16:] not in data
    for secret in (b"alice", b"carol-the-long", b"meta-secret", b"test-emb"):
        assert secret not in data
    assert data.startswith(MAGIC)
    # no leftovers next to the store besides the store and its lock file
    assert sorted(os.listdir(tmp_path)) == ["a.fus", "a.fus.lock", "xdg"]


def test_file_modes(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        p = tmp_path / "store" / "a.fus"
        s = TemplateStore(p)
        s.put("u", rec())
        kp = default_key_path(p)
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(str(p) + ".lock").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(kp).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(kp.parent).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(p.parent).st_mode) == 0o700
        assert len(kp.read_bytes()) == 32
        assert kp.parent != p.parent
        s.put("v", rec())  # rewrite keeps 0600
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
        os.chmod(p, 0o644)
        with pytest.warns(UserWarning):
            TemplateStore(p)
    finally:
        os.umask(old)


def test_repr_and_messages_hide_templates(tmp_path: Path) -> None:
    r = rec(2, 4, 7)
    vals = [f"{v:.3f}" for v in r.templates.ravel()] + [f"{v:.2f}" for v in r.templates.ravel()]
    for text in (repr(r), str(r)):
        assert "(2, 4)" in text and "test-emb" in text
        assert not any(v in text for v in vals)
    p = tmp_path / "a.fus"
    s = TemplateStore(p, key=KEY)
    s.put("u", r)
    for text in (repr(s), str(s)):
        assert KEY.hex() not in text and repr(KEY) not in text and not any(v in text for v in vals)
    msgs = []
    bad = UserRecord(r.templates * 2, "e", 0.0)
    for call in (
        lambda: s.put("u", bad),
        lambda: TemplateStore(p, key=KEY2),
        lambda: TemplateStore(p, key=KEY[:5]),
    ):
        with pytest.raises(FaceUnlockError) as ei:
            call()
        msgs.append(str(ei.value) + repr(ei.value.args))
        assert ei.value.__cause__ is None
    bad_vals = [f"{v:.3f}" for v in bad.templates.ravel()]
    assert not any(v in m for m in msgs for v in vals + bad_vals)
    assert not any(KEY.hex() in m or KEY2.hex() in m for m in msgs)
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(s)


# ----------------------------------------------------------------------------- key files & paths
def test_default_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    xdg = tmp_path / "xdg"
    assert default_store_path() == xdg / "faceunlock" / "store" / "default.fus"
    kp = default_key_path(default_store_path())
    assert kp.parent == xdg / "faceunlock" / "keys" and kp.name.startswith("default-") and kp.suffix == ".key"
    assert default_key_path(tmp_path / "a.fus") != default_key_path(tmp_path / "b" / "a.fus")
    sys_kp = default_key_path("/var/lib/faceunlock/store/phone.fus")
    assert sys_kp.parent == Path("/var/lib/faceunlock/keys")
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    if os.geteuid() != 0:
        assert default_store_path() == tmp_path / "home" / ".local/share/faceunlock/store/default.fus"
        assert default_key_path(tmp_path / "a.fus").parent == tmp_path / "home/.local/share/faceunlock/keys"
    else:
        assert default_store_path() == Path("/var/lib/faceunlock/store/default.fus")
        assert default_key_path(tmp_path / "a.fus").parent == Path("/var/lib/faceunlock/keys")
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    assert default_store_path().is_absolute()


def test_default_store_path_works_end_to_end(tmp_path: Path) -> None:
    s = TemplateStore(default_store_path())
    s.put("u", rec())
    assert TemplateStore(default_store_path()).get("u") == rec()


def test_missing_key_file_for_existing_store(tmp_path: Path) -> None:
    p = tmp_path / "a.fus"
    TemplateStore(p).put("u", rec())
    kp = default_key_path(p)
    kp.unlink()
    before = p.read_bytes()
    with pytest.raises(StoreError) as ei:
        TemplateStore(p)
    assert not isinstance(ei.value, StoreIntegrityError)
    assert "missing" in str(ei.value)
    assert not kp.exists() and p.read_bytes() == before
    # explicit key_file: same rule
    with pytest.raises(StoreError) as ei:
        TemplateStore(p, key_file=tmp_path / "k" / "none.key")
    assert not isinstance(ei.value, StoreIntegrityError) and not (tmp_path / "k" / "none.key").exists()


def test_explicit_key_file_and_corrupt_key_file(tmp_path: Path) -> None:
    p = tmp_path / "a.fus"
    kf = tmp_path / "keys" / "my.key"
    TemplateStore(p, key_file=kf).put("u", rec())
    assert len(kf.read_bytes()) == 32 and stat.S_IMODE(os.stat(kf.parent).st_mode) == 0o700
    assert TemplateStore(p, key_file=kf).users() == ["u"]
    assert TemplateStore(p, key=kf.read_bytes()).users() == ["u"]
    kf.write_bytes(b"junk")
    with pytest.raises(StoreError):
        TemplateStore(p, key_file=kf)


def test_key_file_rotation_file_with_two_keys(tmp_path: Path) -> None:
    """A key file holding old ‖ new (a rotation interrupted either side of the store replace)."""
    p = tmp_path / "a.fus"
    kf = tmp_path / "keys" / "k.key"
    TemplateStore(p, key_file=kf).put("u", rec())
    old = kf.read_bytes()
    kf.write_bytes(old + os.urandom(32))  # crash before the store was replaced
    assert TemplateStore(p, key_file=kf).users() == ["u"]
    kf.write_bytes(os.urandom(32) + old)  # crash after the store was replaced
    assert TemplateStore(p, key_file=kf).users() == ["u"]
    kf.write_bytes(os.urandom(64))
    with pytest.raises(StoreIntegrityError):
        TemplateStore(p, key_file=kf)


# ----------------------------------------------------------------------------- rekey
def test_rekey_round_trips(tmp_path: Path) -> None:
    p = tmp_path / "a.fus"
    s = TemplateStore(p, passphrase="first pass", **WEAK_KDF)
    s.put("alice", rec(seed=1))
    s.put("bob", rec(seed=2, failures=4, locked_until=5.0, meta={"k": [1, 2]}))
    want = {u: s.get(u) for u in s.users()}

    def check(store: TemplateStore) -> None:
        assert store.verify() == 2 and {u: store.get(u) for u in store.users()} == want

    # passphrase -> default key file
    s.rekey()
    kp = default_key_path(p)
    assert kp.exists() and stat.S_IMODE(os.stat(kp).st_mode) == 0o600
    with pytest.raises(StoreIntegrityError):
        TemplateStore(p, passphrase="first pass")
    check(s)
    check(TemplateStore(p))
    # rotate the default key file in place
    k1 = kp.read_bytes()
    s.rekey()
    k2 = kp.read_bytes()
    assert len(k2) == 32 and k2 != k1
    with pytest.raises(StoreIntegrityError):
        TemplateStore(p, key=k1)
    check(TemplateStore(p, key=k2))
    # key file -> raw key (the retired default key file is deleted)
    s.rekey(key=KEY)
    assert not kp.exists()
    with pytest.raises(StoreIntegrityError):
        TemplateStore(p, key=k2)
    check(TemplateStore(p, key=KEY))
    # raw key -> raw key
    s.rekey(key=KEY2)
    with pytest.raises(StoreIntegrityError):
        TemplateStore(p, key=KEY)
    check(TemplateStore(p, key=KEY2))
    # raw key -> explicit key file -> passphrase
    kf = tmp_path / "keys" / "k.key"
    s.rekey(key_file=kf)
    with pytest.raises(StoreIntegrityError):
        TemplateStore(p, key=KEY2)
    check(TemplateStore(p, key_file=kf))
    s.rekey(passphrase="second pass", **WEAK_KDF)
    assert kf.exists()  # explicit key files are the caller's to dispose of
    with pytest.raises(StoreIntegrityError):
        TemplateStore(p, key_file=kf)
    with pytest.raises(StoreIntegrityError):
        TemplateStore(p, passphrase="first pass")
    check(TemplateStore(p, passphrase="second pass"))
    check(s)
    s.put("carol", rec(seed=3))
    assert TemplateStore(p, passphrase="second pass").users() == ["alice", "bob", "carol"]


def test_rekey_refuses_existing_foreign_key_file_and_bad_store(tmp_path: Path) -> None:
    p = tmp_path / "a.fus"
    s = TemplateStore(p, key=KEY)
    s.put("u", rec())
    foreign = tmp_path / "other.key"
    foreign.write_bytes(b"k" * 32)
    before = p.read_bytes()
    with pytest.raises(StoreError):
        s.rekey(key_file=foreign)
    assert foreign.read_bytes() == b"k" * 32 and p.read_bytes() == before
    assert TemplateStore(p, key=KEY).users() == ["u"]
    with pytest.raises(StoreValueError):
        s.rekey(key=b"x")
    assert s.users() == ["u"]  # still on the old key


# ----------------------------------------------------------------------------- durability
def test_stale_temp_files_ignored_then_cleaned(tmp_path: Path) -> None:
    p = tmp_path / "a.fus"
    s = TemplateStore(p, key=KEY)
    s.put("u", rec())
    stale = tmp_path / (".a.fus.tmp-" + "ab" * 16)
    stale.write_bytes(b"partial garbage")
    unrelated = tmp_path / ".a.fus.tmp-notours"
    unrelated.write_bytes(b"x")
    other_store = tmp_path / (".b.fus.tmp-" + "cd" * 16)
    other_store.write_bytes(b"x")
    assert TemplateStore(p, key=KEY).users() == ["u"]
    assert stale.exists()  # readers never delete
    s.put("v", rec())
    assert not stale.exists() and unrelated.exists() and other_store.exists()


def _check_after_crash(p: Path, expect: dict, stats: dict) -> None:
    s = TemplateStore(p, key=KEY)
    n = s.verify()
    users = s.users()
    assert n == len(users)
    for u, r in expect["base"].items():
        assert s.get(u) == r
    for slot, lo in expect["slots"].items():
        r = s.get(f"slot{slot}")
        if lo is None:
            if r is None:
                continue
        else:
            assert r is not None, f"acknowledged slot{slot} lost"
        seq = r.meta["seq"]
        assert (lo is None or seq >= lo) and seq <= expect["max_seq"] + 1
        assert r == worker.record_for(seq)
        expect["slots"][slot] = seq
    ctr = s.get("ctr")
    lo = expect["ctr"]
    if ctr is None:
        assert lo == 0
    else:
        assert lo <= ctr.meta["n"] <= lo + 1
        expect["ctr"] = ctr.meta["n"]
    stats["temps"] += sum(1 for f in os.listdir(p.parent) if ".tmp-" in f)


def _parse_acks(text: str, expect: dict, nslots: int) -> int:
    count = 0
    for line in text.splitlines():
        kind, _, v = line.partition(" ")
        if kind == "p":
            seq = int(v)
            slot = seq % nslots
            cur = expect["slots"][slot]
            expect["slots"][slot] = seq if cur is None else max(cur, seq)
            expect["max_seq"] = max(expect["max_seq"], seq)
            count += 1
        elif kind == "c":
            expect["ctr"] = max(expect["ctr"], int(v))
            count += 1
    return count


def test_sigkill_during_writes_never_loses_committed_data(tmp_path: Path) -> None:
    """>= 200 writers killed with SIGKILL at random instants; the store always verifies."""
    p = tmp_path / "a.fus"
    nslots = 6
    s = TemplateStore(p, key=KEY)
    base = {f"base{i}": rec(2, 8, 500 + i) for i in range(4)}
    for u, r in base.items():
        s.put(u, r)
    expect = {"base": base, "slots": {i: None for i in range(nslots)}, "ctr": 0, "max_seq": 0}
    stats = {"temps": 0, "acks": 0, "kills": 0}
    rng = random.Random(1234)
    seq = 0
    for _ in range(210):
        r_fd, w_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: write until killed
            code = 0
            try:
                os.close(r_fd)
                worker.write_loop(str(p), KEY, seq, nslots, lambda line: os.write(w_fd, line.encode()))
            except BaseException:
                code = 3
            finally:
                os._exit(code)
        os.close(w_fd)
        # wait for the writer's first acknowledged write, so the random delay below is spent
        # writing (not starting up) however loaded the machine is
        chunks = [os.read(r_fd, 65536)]
        time.sleep(rng.uniform(0.0, 0.030))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, "writer died on its own"
        while True:
            b = os.read(r_fd, 65536)
            if not b:
                break
            chunks.append(b)
        os.close(r_fd)
        text = b"".join(chunks).decode()
        expect["max_seq"] = seq - 1  # then the last acknowledged seq; max_seq + 1 may be in flight
        stats["acks"] += _parse_acks(text, expect, nslots)
        stats["kills"] += 1
        _check_after_crash(p, expect, stats)
        seq = expect["max_seq"] + 2
    assert stats["kills"] >= 200
    assert stats["acks"] >= 200, stats  # the writers really were writing when killed
    assert stats["temps"] >= 1, stats  # some kills landed mid-write (typically >50% do)
    s.put("after", rec())  # the next writer cleans stale temp files
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]
    assert TemplateStore(p, key=KEY).verify() == len(TemplateStore(p, key=KEY).users())


def test_sigkill_real_subprocess_writer(tmp_path: Path) -> None:
    """The same with a freshly started interpreter (no shared state with the test process)."""
    p = tmp_path / "a.fus"
    nslots = 4
    base = {"base": rec(2, 8, 77)}
    TemplateStore(p, key=KEY).put("base", base["base"])
    expect = {"base": base, "slots": {i: None for i in range(nslots)}, "ctr": 0, "max_seq": 0}
    stats = {"temps": 0}
    rng = random.Random(99)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    seq = 0
    for _ in range(8):
        with subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("_store_worker.py")), str(p), KEY.hex(), str(seq), str(nslots)],
            stdout=subprocess.PIPE,
            env=env,
        ) as proc:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"ready\n"
            select.select([proc.stdout], [], [], 5.0)  # wait for the first ack (store opened)
            time.sleep(rng.uniform(0.0, 0.030))
            proc.send_signal(signal.SIGKILL)
            out = proc.stdout.read().decode()
            assert proc.wait() == -signal.SIGKILL
        expect["max_seq"] = seq - 1
        _parse_acks(out, expect, nslots)
        _check_after_crash(p, expect, stats)
        seq = expect["max_seq"] + 2


def _enroll_many(path: str, prefix: str, n: int) -> None:
    s = TemplateStore(path, key=KEY)
    for i in range(n):
        s.put(f"{prefix}{i}", worker.record_for(i))
        s.update("ctr", worker.incr)


def test_concurrent_writers_all_persist(tmp_path: Path) -> None:
    n = 15
    for round_ in range(6):
        p = tmp_path / f"r{round_}.fus"
        if round_ % 2:
            TemplateStore(p, key=KEY).put("pre", rec())
        pids = []
        for prefix in ("a", "b"):
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    _enroll_many(str(p), prefix, n)
                except BaseException:
                    code = 3
                finally:
                    os._exit(code)
            pids.append(pid)
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        s = TemplateStore(p, key=KEY)
        want = {f"{x}{i}" for x in "ab" for i in range(n)} | {"ctr"} | ({"pre"} if round_ % 2 else set())
        assert set(s.users()) == want
        assert s.get("ctr").meta["n"] == 2 * n  # no lost read-modify-write
        assert s.verify() == len(want)


# ----------------------------------------------------------------------------- layering
def test_store_imports_only_what_it_may() -> None:
    tree = ast.parse((REPO / "faceunlock" / "store.py").read_text())
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mods.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
    local = {m for m in mods if m.startswith(".")}
    assert local == {".errors"}
    assert not any(m.split(".")[0] in {"socket", "urllib", "http", "requests", "ssl"} for m in mods)


def test_key_file_created_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def no_link(*a, **k):
        raise OSError(errno.EPERM, "no hard links here")

    monkeypatch.setattr(os, "link", no_link)
    p = tmp_path / "a.fus"
    TemplateStore(p).put("u", rec())
    kp = default_key_path(p)
    assert len(kp.read_bytes()) == 32 and stat.S_IMODE(os.stat(kp).st_mode) == 0o600
    assert not [f for f in os.listdir(kp.parent) if ".tmp-" in f]
    assert TemplateStore(p).get("u") == rec()
