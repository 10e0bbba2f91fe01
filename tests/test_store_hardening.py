"""Store hardening (issue 9, findings 7-10 and 15): limits on write, symlinked paths, key temp
files, permissions, the KDF floor, and docs/STORE.md's examples checked against the code."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _store_worker as worker  # noqa: E402

from faceunlock import store as store_mod  # noqa: E402
from faceunlock.errors import InsecurePermissionsError, StoreError  # noqa: E402
from faceunlock.store import (  # noqa: E402
    Argon2idParams,
    ScryptParams,
    StoreValueError,
    TemplateStore,
    UserRecord,
    default_key_path,
)

KEY = worker.KEY
REPO = Path(__file__).resolve().parent.parent
STORE_MD = REPO / "docs" / "STORE.md"
CHEAP_ARGON = Argon2idParams(memory_kib=8, iterations=1, lanes=1)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Default key files go to a private temporary XDG_DATA_HOME, never the real one."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def rec(k: int = 2, d: int = 8, seed: int = 0, **kw) -> UserRecord:
    return UserRecord(templates=worker.unit_rows(seed, k, d), embedder="e", created=float(seed), **kw)


def all_bytes_under(*dirs: Path) -> list[tuple[Path, bytes]]:
    out = []
    for d in dirs:
        for root, _, files in os.walk(d):
            for f in files:
                p = Path(root, f)
                out.append((p, p.read_bytes()))
    return out


# ----------------------------------------------------------------------------- finding 7: limits
def test_oversized_puts_are_refused_and_the_store_still_opens(tmp_path, monkeypatch) -> None:
    """Each record is legal on its own; together they would pass the file cap. Every put that
    would make a file ``open`` rejects raises StoreValueError and writes nothing."""
    monkeypatch.setattr(store_mod, "MAX_FILE_BYTES", 300_000)  # the real 512 MiB needs 512 MiB of RAM
    p = tmp_path / "a.fus"
    s = TemplateStore(p, key=KEY)
    big = {u: rec(2048, 16, i) for i, u in enumerate(["alice", "bob"])}  # 131 kB each
    for u, r in big.items():
        s.put(u, r)
    good = p.read_bytes()
    for i, u in enumerate(["carol", "dave", "erin", "frank", "grace"]):
        with pytest.raises(StoreValueError, match="limit"):
            s.put(u, rec(2048, 16, 10 + i))
        assert p.read_bytes() == good
    with pytest.raises(StoreValueError):  # growing an existing user past the cap
        s.put("bob", rec(4096, 16, 3))
    with pytest.raises(StoreValueError):
        s.update("alice", lambda old: rec(4096, 16, 4))
    assert p.read_bytes() == good
    again = TemplateStore(p, key=KEY)
    assert again.users() == ["alice", "bob"] and again.verify() == 2
    assert all(again.get(u) == r for u, r in big.items())
    s.put("carol", rec(2, 8, 5))  # a small write still fits
    assert TemplateStore(p, key=KEY).users() == ["alice", "bob", "carol"]


def test_real_file_cap_arithmetic(tmp_path) -> None:
    """The write-side size is exactly the file's size, and four maximal records exceed 512 MiB."""
    p = tmp_path / "a.fus"
    s = TemplateStore(p, key=KEY)
    for i, (k, d) in enumerate([(1, 4), (7, 128), (3, 512)]):
        s.put(f"user{i}" * (i + 1), rec(k, d, i, meta={"n": "x" * (100 * i)}))
    ents = store_mod._parse_entries(p.read_bytes())
    assert store_mod._store_file_bytes(len(e.ct) for e in ents.values()) == p.stat().st_size
    assert store_mod._store_file_bytes([]) == 108  # header 72 + count 4 + MAC 32
    assert store_mod.MAX_FILE_BYTES == 512 * 1024 * 1024
    # the largest record the API accepts: 4,096 x 8,192 float32 plus its JSON head and GCM tag
    biggest = 4 + 200 + 4 * store_mod.MAX_TEMPLATES * store_mod.MAX_DIM + store_mod.TAG_BYTES
    store_mod._check_file_limits([biggest] * 3)  # fits
    with pytest.raises(StoreValueError):
        store_mod._check_file_limits([biggest] * 4)
    n = store_mod.MAX_USERS
    store_mod._check_file_limits([20] * n)
    with pytest.raises(StoreValueError):
        store_mod._check_file_limits([20] * (n + 1))


def test_user_count_limit_on_write(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(store_mod, "MAX_USERS", 3)
    p = tmp_path / "a.fus"
    s = TemplateStore(p, key=KEY)
    for u in ("a", "b", "c"):
        s.put(u, rec())
    with pytest.raises(StoreValueError, match="at most 3 users"):
        s.put("d", rec())
    s.put("b", rec(seed=9))  # replacing keeps the count
    assert TemplateStore(p, key=KEY).users() == ["a", "b", "c"]


def test_meta_size_and_depth_limits(tmp_path) -> None:
    p = tmp_path / "a.fus"
    s = TemplateStore(p, key=KEY)
    limit = store_mod.MAX_META_BYTES
    pad = limit - len('{"x":""}')
    s.put("fits", rec(meta={"x": "a" * pad}))  # exactly 64 KiB of JSON
    assert TemplateStore(p, key=KEY).get("fits").meta == {"x": "a" * pad}
    before = p.read_bytes()
    with pytest.raises(StoreValueError, match="larger than"):
        s.put("big", rec(meta={"x": "a" * (pad + 1)}))
    with pytest.raises(StoreValueError, match="larger than"):
        s.put("big", rec(meta={"x": "\u00e9" * (pad // 6 + 1)}))  # escaped: 6 bytes each
    for depth in (store_mod.MAX_META_DEPTH, 2000):
        deep: object = 1
        for _ in range(depth):
            deep = [deep]
        with pytest.raises(StoreValueError, match="nested"):
            s.put("deep", rec(meta={"d": deep}))
    assert p.read_bytes() == before
    ok: object = 1
    for _ in range(store_mod.MAX_META_DEPTH - 1):
        ok = [ok]
    s.put("deep", rec(meta={"d": ok}))
    assert TemplateStore(p, key=KEY).get("deep").meta == {"d": ok}


# ----------------------------------------------------------------------------- finding 8: symlinks
def test_symlinked_store_path_is_resolved_once(tmp_path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    links = tmp_path / "links"
    links.mkdir(mode=0o700)
    target = real / "a.fus"
    link = links / "a.fus"
    TemplateStore(target).put("alice", rec(seed=1))  # default key file
    link.symlink_to(target)
    s = TemplateStore(link)
    s.put("bob", rec(seed=2))
    assert link.is_symlink() and os.readlink(link) == str(target)  # the link was not replaced
    assert target.is_file() and not target.is_symlink()
    for p in (link, target):
        again = TemplateStore(p)
        assert again.users() == ["alice", "bob"] and again.verify() == 2
    assert default_key_path(link) == default_key_path(target) and s.path == target
    assert sorted(os.listdir(links)) == ["a.fus"]  # lock and temp files live beside the target


def test_dangling_symlink_creates_the_target(tmp_path) -> None:
    target = tmp_path / "data" / "s.fus"
    link = tmp_path / "s.fus"
    link.symlink_to(target)
    s = TemplateStore(link)
    s.put("u", rec())
    assert link.is_symlink() and target.is_file()
    assert TemplateStore(link).users() == ["u"] and TemplateStore(target).users() == ["u"]


def test_store_path_that_is_a_directory(tmp_path) -> None:
    with pytest.raises(StoreValueError, match="directory"):
        TemplateStore(tmp_path, key=KEY)


# ----------------------------------------------------------------------------- finding 9: key temp files
def _crash_link(kf: Path) -> Path:
    """What a key-file creator killed between link() and unlink() leaves behind."""
    tmp = kf.parent / f".{kf.name}.tmp-{os.urandom(16).hex()}"
    os.link(kf, tmp)
    return tmp


def test_key_temp_link_from_a_crashed_creation_is_removed_on_open(tmp_path) -> None:
    p = tmp_path / "a.fus"
    TemplateStore(p).put("u", rec())
    kf = default_key_path(p)
    stale = _crash_link(kf)
    unrelated = [kf.parent / f".{kf.name}.tmp-notours", kf.parent / f".other.key.tmp-{'ab' * 16}"]
    for f in unrelated:
        f.write_bytes(b"x")
    assert TemplateStore(p).users() == ["u"]
    assert not stale.exists() and all(f.exists() for f in unrelated)


def test_key_temp_of_a_new_key_file_is_removed_before_creating(tmp_path) -> None:
    kf = tmp_path / "keys" / "k.key"
    kf.parent.mkdir(mode=0o700)
    stale = kf.parent / f".k.key.tmp-{'cd' * 16}"
    stale.write_bytes(os.urandom(32))  # crashed before link(): the key it held was never used
    TemplateStore(tmp_path / "a.fus", key_file=kf).put("u", rec())
    assert not stale.exists() and sorted(os.listdir(kf.parent)) == ["k.key"]


@pytest.mark.parametrize("target", ["rotate", "passphrase", "key", "key_file"])
def test_rekey_leaves_no_copy_of_the_old_key(tmp_path, target) -> None:
    p = tmp_path / "store" / "a.fus"
    s = TemplateStore(p)
    s.put("u", rec())
    kf = default_key_path(p)
    old = kf.read_bytes()
    stale = _crash_link(kf)  # after the store was opened: cleaned by rekey itself
    if target == "rotate":
        s.rekey()
    elif target == "passphrase":
        s.rekey(passphrase="a real passphrase", kdf_params=CHEAP_ARGON, _allow_weak_kdf_for_tests=True)
    elif target == "key":
        s.rekey(key=os.urandom(32))
    else:
        s.rekey(key_file=tmp_path / "other" / "n.key")
    assert not stale.exists()
    leaks = [f for f, data in all_bytes_under(tmp_path) if old in data]
    assert leaks == []
    assert s.users() == ["u"]


def test_interrupted_rotation_temp_is_removed(tmp_path) -> None:
    """A crash while writing old ‖ new leaves a temp copy holding the old key."""
    p = tmp_path / "a.fus"
    kf = tmp_path / "keys" / "k.key"
    TemplateStore(p, key_file=kf).put("u", rec())
    old = kf.read_bytes()
    stale = kf.parent / f".k.key.tmp-{'ef' * 16}"
    stale.write_bytes(old + os.urandom(32))
    os.chmod(stale, 0o600)
    s = TemplateStore(p, key_file=kf)
    assert not stale.exists()
    s.rekey(key_file=kf)
    assert [f for f, data in all_bytes_under(tmp_path) if old in data] == []
    assert TemplateStore(p, key_file=kf).users() == ["u"]


# ----------------------------------------------------------------------------- finding 10: permissions
def _one_line(e: BaseException) -> str:
    msg = str(e)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o602])
def test_key_file_others_can_read_is_refused(tmp_path, mode) -> None:
    p = tmp_path / "a.fus"
    kf = tmp_path / "keys" / "k.key"
    TemplateStore(p, key_file=kf).put("u", rec())
    before = p.read_bytes()
    os.chmod(kf, mode)
    with pytest.raises(InsecurePermissionsError) as ei:
        TemplateStore(p, key_file=kf)
    assert isinstance(ei.value, StoreError)
    assert f"chmod 600 {kf}" in _one_line(ei.value)
    assert p.read_bytes() == before
    os.chmod(kf, 0o620)  # group-writable only: a warning
    with pytest.warns(UserWarning, match="chmod 600"):
        assert TemplateStore(p, key_file=kf).users() == ["u"]


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o703])
def test_world_writable_key_directory_is_refused(tmp_path, mode) -> None:
    p = tmp_path / "a.fus"
    kd = tmp_path / "keys"
    TemplateStore(p, key_file=kd / "k.key").put("u", rec())
    os.chmod(kd, mode)
    with pytest.raises(InsecurePermissionsError) as ei:
        TemplateStore(p, key_file=kd / "k.key")
    assert f"chmod 700 {kd}" in _one_line(ei.value)
    fresh = tmp_path / "keys2"
    fresh.mkdir()
    os.chmod(fresh, mode)
    with pytest.raises(InsecurePermissionsError):  # no key is ever created there
        TemplateStore(tmp_path / "b.fus", key_file=fresh / "k.key")
    assert os.listdir(fresh) == []


def test_world_writable_store_directory_is_refused(tmp_path) -> None:
    d = tmp_path / "shared"
    d.mkdir()
    TemplateStore(d / "a.fus", key=KEY).put("u", rec())
    os.chmod(d, 0o777)
    for p in (d / "a.fus", d / "new.fus"):
        with pytest.raises(InsecurePermissionsError) as ei:
            TemplateStore(p, key=KEY)
        assert f"chmod o-w {d}" in _one_line(ei.value)
    assert sorted(os.listdir(d)) == ["a.fus", "a.fus.lock"]


def test_store_directory_checked_again_before_a_write(tmp_path) -> None:
    d = tmp_path / "s"
    d.mkdir(mode=0o700)
    s = TemplateStore(d / "a.fus", key=KEY)
    s.put("u", rec())
    before = (d / "a.fus").read_bytes()
    os.chmod(d, 0o777)
    with pytest.raises(InsecurePermissionsError):
        s.put("v", rec())
    assert (d / "a.fus").read_bytes() == before


def test_sticky_and_group_writable_store_directories_warn(tmp_path) -> None:
    for mode, text in ((0o1777, "sticky"), (0o770, "group-writable")):
        d = tmp_path / f"d{mode:o}"
        d.mkdir()
        os.chmod(d, mode)
        with pytest.warns(UserWarning, match=text):
            s = TemplateStore(d / "a.fus", key=KEY)
        with pytest.warns(UserWarning, match=text):
            s.put("u", rec())
        with pytest.warns(UserWarning, match=text):
            assert TemplateStore(d / "a.fus", key=KEY).users() == ["u"]


def test_world_writable_store_file_is_refused(tmp_path) -> None:
    p = tmp_path / "a.fus"
    TemplateStore(p, key=KEY).put("u", rec())
    os.chmod(p, 0o666)
    with pytest.raises(InsecurePermissionsError) as ei:
        TemplateStore(p, key=KEY)
    assert f"chmod 600 {p}" in _one_line(ei.value)


def test_cli_reports_a_readable_key_file_in_one_line(tmp_path, capsys) -> None:
    from faceunlock import cli

    p = tmp_path / "a.fus"
    kf = tmp_path / "keys" / "k.key"
    TemplateStore(p, key_file=kf).put("u", rec())
    os.chmod(kf, 0o644)
    code = cli.main(["--store", str(p), "--key-file", str(kf), "users"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err
    assert len(err.splitlines()) == 1 and f"chmod 600 {kf}" in err


# ----------------------------------------------------------------------------- finding 10: KDF floor
@pytest.mark.parametrize(
    "params",
    [
        Argon2idParams(memory_kib=8, iterations=1, lanes=1),
        Argon2idParams(memory_kib=19 * 1024 - 1, iterations=2, lanes=1),
        Argon2idParams(memory_kib=64 * 1024, iterations=1, lanes=4),
        ScryptParams(log2_n=16, r=8, p=1),
        ScryptParams(log2_n=17, r=4, p=1),
        ScryptParams(log2_n=15, r=8, p=1),  # the old fallback default
    ],
)
def test_weak_kdf_refused_for_a_new_store(tmp_path, params) -> None:
    p = tmp_path / "a.fus"
    with pytest.raises(StoreValueError, match="floor"):
        TemplateStore(p, passphrase="pw", kdf_params=params)
    s = TemplateStore(p, key=KEY)
    s.put("u", rec())
    before = p.read_bytes()
    with pytest.raises(StoreValueError, match="floor"):
        s.rekey(passphrase="pw", kdf_params=params)
    assert p.read_bytes() == before and s.users() == ["u"]


def test_kdf_floor_accepts_the_minimum_and_the_defaults(tmp_path) -> None:
    assert ScryptParams().log2_n >= 17 and ScryptParams().r >= 8 and ScryptParams().p >= 1
    d = Argon2idParams()
    assert d.memory_kib >= 19 * 1024 and d.iterations >= 2
    for i, params in enumerate([ScryptParams(), d, Argon2idParams(memory_kib=19 * 1024, iterations=2, lanes=1)]):
        TemplateStore(tmp_path / f"{i}.fus", passphrase="pw", kdf_params=params)  # derives on first write
    p = tmp_path / "min.fus"
    TemplateStore(p, passphrase="pw", kdf_params=Argon2idParams(19 * 1024, 2, 1)).put("u", rec())
    assert TemplateStore(p, passphrase="pw").users() == ["u"]


def test_existing_weak_store_still_opens_and_takes_writes(tmp_path) -> None:
    p = tmp_path / "a.fus"
    TemplateStore(p, passphrase="pw", kdf_params=CHEAP_ARGON, _allow_weak_kdf_for_tests=True).put("u", rec())
    header = p.read_bytes()[:40]
    s = TemplateStore(p, passphrase="pw")  # no opt-out needed: the header decides
    s.put("v", rec(seed=1))
    assert s.users() == ["u", "v"] and p.read_bytes()[:40] == header
    assert TemplateStore(p, passphrase="pw", kdf_params=CHEAP_ARGON).users() == ["u", "v"]


def test_scrypt_fallback_meets_the_floor(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(store_mod, "_ARGON2_AVAILABLE", False)
    p = tmp_path / "a.fus"
    s = TemplateStore(p, passphrase="pw")
    s.put("u", rec())
    kdf, p1, p2, p3 = p.read_bytes()[10], *np.frombuffer(p.read_bytes()[12:24], ">u4")
    assert kdf == store_mod.KDF_SCRYPT and (p1, p2, p3) == (17, 8, 1)


# ----------------------------------------------------------------------------- finding 15: docs
def _md() -> str:
    return STORE_MD.read_text(encoding="utf-8")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", _md(), flags=re.S)


def test_store_md_record_json_example_is_what_the_code_writes() -> None:
    heads = [b.strip() for b in _blocks("json") if isinstance(json.loads(b), dict) and "shape" in json.loads(b)]
    assert heads, "docs/STORE.md must show a record's JSON head"  # (every json block must parse)
    for text in heads:
        head = json.loads(text)
        k, d = head["shape"]
        r = UserRecord(
            templates=worker.unit_rows(0, k, d), embedder=head["embedder"], created=head["created"],
            failures=head["failures"], locked_until=head["locked_until"],
            permanent_lock=head["permanent_lock"], last_attempt=head["last_attempt"], meta=head["meta"],
        )
        pt = store_mod._encode_record(head["user"], r)
        (n,) = store_mod._COUNT.unpack_from(pt, 0)
        assert pt[4 : 4 + n].decode("ascii") == text  # byte for byte: order, separators, escapes
        assert list(head) == sorted(head)


def test_store_md_field_list_is_in_sorted_order() -> None:
    m = re.search(r"sorted keys[^:]*:(.*?)\|", _md(), flags=re.S)
    assert m, "docs/STORE.md must list the JSON head's keys"
    keys = re.findall(r"`([a-z_]+)`", m.group(1))
    example = next(json.loads(b) for b in _blocks("json") if "shape" in json.loads(b))
    assert keys == sorted(keys) and set(keys) == set(example)


def test_store_md_limits_match_the_code() -> None:
    md = _md()
    rows = dict(re.findall(r"^\| `(MAX_[A-Z_]+)` \| ([0-9,]+) \|", md, flags=re.M))
    want = ("MAX_FILE_BYTES", "MAX_USERS", "MAX_TEMPLATES", "MAX_DIM", "MAX_META_BYTES", "MAX_META_DEPTH",
            "MAX_USER_ID_BYTES")
    assert set(want) <= set(rows), rows
    for name, value in rows.items():
        assert int(value.replace(",", "")) == getattr(store_mod, name), name
    floor = dict(re.findall(r"^ *\| `(MIN_[A-Z0-9_]+)` \| ([0-9,]+) \|", md, flags=re.M))
    assert set(floor) == {"MIN_ARGON2_MEMORY_KIB", "MIN_ARGON2_ITERATIONS", "MIN_SCRYPT_LOG2_N", "MIN_SCRYPT_R"}
    for name, value in floor.items():
        assert int(value.replace(",", "")) == getattr(store_mod, name), name


def test_store_md_default_key_path_examples(monkeypatch) -> None:
    md = _md()
    assert "faceunlock/faceunlock" not in md
    rows = re.findall(r"^ *\| `(/[^`]+\.fus)` \| `([^`]*)` \| `(/[^`]+\.key)` \|", md, flags=re.M)
    assert len(rows) >= 2, "docs/STORE.md must give default_key_path examples"
    for store, xdg, key in rows:
        if xdg == "-":
            monkeypatch.delenv("XDG_DATA_HOME", raising=False)
        else:
            monkeypatch.setenv("XDG_DATA_HOME", xdg)
        assert os.path.realpath(store) == store  # (no symlinks on the example paths here)
        assert str(default_key_path(store)) == key, store


def test_permission_refusal_keeps_stat_modes_documented() -> None:
    md = _md()
    for text in ("chmod 600", "chmod 700", "chmod o-w", "sticky", "InsecurePermissionsError"):
        assert text in md, text
