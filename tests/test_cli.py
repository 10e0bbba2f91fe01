"""The `faceunlock` command line: commands, exit codes (0 granted, 1 denied, 2 error), --json.

Bundled portraits make the image folders, so nothing here needs ../shared or a camera;
the dev-video test skips without ../shared."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import pytest

from faceunlock import cli
from faceunlock.image import load_image

DATA = Path(cli.__file__).resolve().parent / "data"
VIDEOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "faces-dev" / "video_liveness" / "liveportrait_driving"


def _views(src: Path, out: Path, n: int = 6) -> Path:
    """A folder of ``n`` rotated/rescaled views of a bundled portrait (a stand-in for frames)."""
    img = load_image(src)
    out.mkdir(parents=True, exist_ok=True)
    h, w = img.shape[:2]
    for i in range(n):
        a, s = -10 + 20 * i / max(n - 1, 1), 0.92 + 0.03 * (i % 3)
        m = cv2.getRotationMatrix2D((w / 2, h / 2), a, s)
        v = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)
        cv2.imwrite(str(out / f"{i:03d}.png"), v[:, :, ::-1])
    return out


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    d = tmp_path_factory.mktemp("frames")
    return {"astronaut": _views(DATA / "astronaut.jpg", d / "astronaut"),
            "hopper": _views(DATA / "grace_hopper.jpg", d / "hopper", 3)}


@pytest.fixture()
def store_args(tmp_path):
    d = tmp_path / "fu"
    return ["--store", str(d / "store" / "t.fus"), "--key-file", str(d / "keys" / "t.key")]


def run(args, capsys):
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_the_commands(capsys):
    text = cli.build_parser().format_help()
    for cmd in ("enroll", "unlock", "users", "remove", "reset-lockout", "store", "bench", "eval-pairs",
                "eval-unlock", "demo", "doctor", "pam-auth"):
        assert cmd in text, cmd
    assert "--store" in text and "--key-file" in text and "--json" in text


def test_enroll_unlock_users_remove(folders, store_args, capsys):
    code, out, err = run(store_args + ["enroll", "astro", "--source", str(folders["astronaut"])], capsys)
    assert code == 0, err
    assert "enrolled 'astro'" in out and "poses captured" in err
    code, out, err = run(store_args + ["unlock", "astro", "--source", str(folders["astronaut"]), "--no-liveness"],
                         capsys)
    assert code == 0 and out.startswith("granted"), (out, err)
    assert "--no-liveness" in err  # the warning
    code, out, _ = run(store_args + ["--json", "unlock", "astro", "--source", str(folders["hopper"]),
                                     "--no-liveness"], capsys)
    r = json.loads(out)
    assert code == 1 and r["granted"] is False and r["reason"] == "no_match" and r["attempts_left"] == 4
    code, out, _ = run(["users", "--json"] + store_args, capsys)  # options after the command work too
    users = json.loads(out)["users"]
    assert code == 0 and [u["user"] for u in users] == ["astro"] and users[0]["failures"] == 1
    assert run(store_args + ["reset-lockout", "astro"], capsys)[0] == 0
    code, out, _ = run(store_args + ["--json", "store", "verify"], capsys)
    assert code == 0 and json.loads(out)["users"] == 1
    code, out, _ = run(store_args + ["store", "rekey"], capsys)
    assert code == 0 and "re-sealed 1 user" in out
    assert run(store_args + ["unlock", "astro", "--source", str(folders["astronaut"]), "--no-liveness"],
               capsys)[0] == 0  # still opens after the rekey
    assert run(store_args + ["remove", "astro"], capsys)[0] == 0
    assert run(store_args + ["remove", "astro"], capsys)[0] == 1
    code, out, _ = run(store_args + ["unlock", "astro", "--source", str(folders["astronaut"]), "--no-liveness"],
                       capsys)
    assert code == 1 and "not_enrolled" in out


def test_error_exit_codes(folders, store_args, tmp_path, capsys):
    code, _, err = run(store_args + ["unlock", "x", "--source", str(tmp_path / "missing.mp4")], capsys)
    assert code == 2 and "no template store" in err  # no store yet
    assert run(store_args + ["enroll", "astro", "--source", str(folders["astronaut"]), "--quiet"], capsys)[0] == 0
    code, _, err = run(store_args + ["unlock", "astro", "--source", str(tmp_path / "missing.mp4")], capsys)
    assert code == 2 and "no such camera, file or folder" in err
    code, _, err = run(store_args + ["enroll", "h", "--source", str(folders["hopper"]), "--quiet"], capsys)
    assert code == 2 and "not enough good frames" in err  # 3 views < 5 templates
    store = Path(store_args[1])
    store.write_bytes(store.read_bytes()[:-1] + b"\0")  # tampered
    code, _, err = run(store_args + ["unlock", "astro", "--source", str(folders["astronaut"])], capsys)
    assert code == 2 and "failed authentication" in err
    assert run(store_args + ["store", "verify"], capsys)[0] == 2


def test_users_without_store_and_doctor(store_args, folders, capsys):
    # A missing store is the same error for `users` as for `unlock`: exit 2, one line.
    code, out, err = run(store_args + ["--json", "users"], capsys)
    code2, _, err2 = run(store_args + ["unlock", "x", "--source", str(folders["astronaut"])], capsys)
    assert code == code2 == 2 and out == "" and err == err2 and err.startswith("faceunlock: error: no template store")
    code, out, err = run(store_args + ["--json", "doctor", "--no-camera"], capsys)
    report = json.loads(out)
    assert code == 0 and report["ok"], report
    names = {c["name"]: c for c in report["checks"]}
    assert names["face_landmark.tflite"]["status"] == "ok" and names["end-to-end"]["status"] == "ok"


def test_doctor_flags_bad_permissions_and_tampering(folders, store_args, capsys):
    assert run(store_args + ["enroll", "astro", "--source", str(folders["astronaut"]), "--quiet"], capsys)[0] == 0
    key = Path(store_args[3])
    os.chmod(key, 0o644)
    code, out, _ = run(store_args + ["--json", "doctor", "--no-camera"], capsys)
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    # The store now refuses a key file others can read (issue 9 finding 10): doctor names it
    # and the authentication check fails.
    assert code == 1 and checks["key file"]["status"] == "warn" and "chmod 600" in checks["key file"]["detail"]
    assert checks["authenticate"]["status"] == "FAIL" and "chmod 600" in checks["authenticate"]["detail"]
    os.chmod(key, 0o600)
    code, out, _ = run(store_args + ["--json", "doctor", "--no-camera"], capsys)
    assert code == 0, out
    store = Path(store_args[1])
    store.write_bytes(store.read_bytes()[:-3] + b"abc")
    code, out, _ = run(store_args + ["--json", "doctor", "--no-camera"], capsys)
    assert code == 1 and {c["name"]: c for c in json.loads(out)["checks"]}["authenticate"]["status"] == "FAIL"


def test_doctor_parses_models_md():
    from faceunlock import doctor

    md = (Path(cli.__file__).parent / "models" / "MODELS.md").read_text()
    exp = doctor.parse_models_md(md)
    assert exp["face_landmark.tflite"].startswith("1055cb9d")
    assert exp["dlib_resnet_v1_fp16.tflite"].startswith("d58e8c7e")


@pytest.mark.skipif(not (VIDEOS / "d18.mp4").exists(), reason="needs ../shared dev videos")
def test_enroll_and_unlock_from_dev_videos(store_args, capsys):
    v = {n: str(VIDEOS / f"{n}.mp4") for n in ("d18", "d19")}
    assert run(store_args + ["enroll", "alice", "--source", v["d18"], "--quiet"], capsys)[0] == 0
    assert run(store_args + ["enroll", "bob", "--source", v["d19"], "--quiet"], capsys)[0] == 0
    # liveness on (the default): bob's recording shows a real, moving head
    code, out, err = run(store_args + ["--json", "unlock", "bob", "--source", v["d19"]], capsys)
    r = json.loads(out)
    assert code == 0 and r["liveness"]["live"], (r, err)
    # from 4 s on: frames the enrolment (the first 2 s) never saw
    code, out, err = run(store_args + ["unlock", "alice", "--source", v["d18"], "--skip", "4", "--no-liveness"], capsys)
    assert code == 0, (out, err)
    code, out, err = run(store_args + ["unlock", "alice", "--source", v["d19"]], capsys)
    assert code == 1 and "no_match" in out, (out, err)
    assert run(store_args + ["unlock", "alice", "--source", v["d18"] + ".missing"], capsys)[0] == 2
    code, out, _ = run(store_args + ["users", "--json"], capsys)
    assert [u["user"] for u in json.loads(out)["users"]] == ["alice", "bob"]


@pytest.mark.slow
def test_demo_runs_headless(capsys):
    from faceunlock import demo

    assert demo.run(display=False) == 0
    out = capsys.readouterr().out
    assert "GRANTED" in out and "DENIED (liveness)" in out and "DENIED (no match)" in out


def test_json_is_strict_for_a_permanent_lock(folders, store_args, capsys):
    """A permanent lock's locked_until is infinite: --json prints null and
    locked_permanently, never Python's non-standard ``Infinity``."""
    import dataclasses

    from faceunlock.store import TemplateStore

    assert run(store_args + ["enroll", "astro", "--source", str(folders["astronaut"]), "--quiet"], capsys)[0] == 0
    TemplateStore(Path(store_args[1]), key_file=Path(store_args[3])).update(
        "astro", lambda rec: dataclasses.replace(rec, permanent_lock=True, failures=20))

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))

    code, out, _ = run(store_args + ["--json", "users"], capsys)
    u = strict(out)["users"][0]
    assert code == 0 and u["locked"] is True and u["locked_until"] is None and u["locked_permanently"] is True
    code, out, _ = run(store_args + ["--json", "unlock", "astro", "--source", str(folders["astronaut"]),
                                     "--no-liveness"], capsys)
    r = strict(out)
    assert code == 1 and r["reason"] == "locked_out" and r["locked_until"] is None and r["locked_permanently"] is True
    code, out, _ = run(store_args + ["unlock", "astro", "--source", str(folders["astronaut"]), "--no-liveness"], capsys)
    assert code == 1 and "until reset-lockout" in out
