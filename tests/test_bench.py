"""Tests of faceunlock.bench: the bundled frame and a short real benchmark run (JSON report)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from faceunlock import bench
from faceunlock.engine import FaceEngine
from faceunlock.image import load_image

STAGES = ("decode", "detect", "landmarks", "align", "embed", "match")


def _args(**kw):
    base = dict(threads=1, frames=None, repeat=3, json=True, dlib=True, strict=False, cold_runs=1, progress=False)
    base.update(kw)
    return SimpleNamespace(**base)


def _run(capsys, **kw) -> tuple[int, dict]:
    rc = bench.main(_args(**kw))
    out = capsys.readouterr().out
    return rc, json.loads(out)


def _check_stats(stats: dict, n: int) -> None:
    for s in (*STAGES, "pipeline"):
        assert stats[s]["n"] == n, s
        assert stats[s]["median_ms"] > 0 and stats[s]["p95_ms"] >= stats[s]["median_ms"] > 0, s


def test_frame_has_exactly_one_webcam_sized_face():
    img = load_image(bench.FRAME_FILE)
    assert img.shape == (480, 640, 3)
    faces = FaceEngine(threads=1).detect(img)
    assert len(faces) == 1
    assert 150 <= faces[0].width <= 200
    assert abs(faces[0].yaw) < 15 and abs(faces[0].roll) < 15
    # the bundled JPEG is what make_frame() produces (up to JPEG loss)
    assert np.abs(img.astype(np.int16) - bench.make_frame()).mean() < 3.0


def test_frame_has_exactly_one_face_for_dlib():
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    from faceunlock.evaluation.dlib_native import DlibNative

    assert len(DlibNative().detect(load_image(bench.FRAME_FILE))) == 1


def test_bench_json_no_dlib(capsys):
    rc, r = _run(capsys, dlib=False)
    assert rc == 0
    _check_stats(r["stages"], 3)
    assert r["dlib_stages"] is None and r["ratio_dlib_over_ours"] is None
    assert r["frames"] == [{"frame": "frame_640x480.jpg", "width": 640, "height": 480,
                            "face_width_px": r["frames"][0]["face_width_px"]}]
    assert r["machine"]["cpu"] and r["machine"]["runtime_version"] and r["machine"]["interpreter_threads"] == 1
    cold = r["cold_start"]
    assert cold["runs"] == 1 and cold["median_total_ms"] > 0
    assert all(v >= 0 for v in cold["phases_of_median_run_ms"].values())
    mem = r["memory"]
    assert mem["after_import_kib"] > 0 and mem["peak_kib"] >= mem["after_models_kib"] >= mem["after_import_kib"]
    names = [t["name"] for t in r["targets"]]
    assert len(names) == 4
    speed = r["targets"][1]
    assert speed["pass"] is None  # skipped, not failed
    assert all(isinstance(t["pass"], bool) for i, t in enumerate(r["targets"]) if i != 1)


def test_bench_json_with_dlib(capsys):
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    rc, r = _run(capsys)
    assert rc == 0
    _check_stats(r["stages"], 3)
    _check_stats(r["dlib_stages"], 3)
    assert r["ratio_dlib_over_ours"] > 1.0  # HOG + dlib's C++ ResNet are much slower
    assert r["per_frame"][0]["ratio"] > 1.0


def test_markdown_and_strict(capsys, monkeypatch):
    # a real (short) report with one target marked missed: the Markdown says FAIL, exit code
    # is 0 (a report), and 1 with --strict
    report = bench.run(threads=1, repeat=2, use_dlib=False, cold_runs=1, warmup=2)
    report["targets"][0]["pass"] = False
    report["all_pass"] = False
    monkeypatch.setattr(bench, "run", lambda **kw: report)
    assert bench.main(_args(json=False, dlib=False)) == 0
    text = capsys.readouterr().out
    for s in (*STAGES, "pipeline, end to end", "Cold start", "Peak RSS", "Targets", "How it was measured",
              report["machine"]["cpu"], report["machine"]["runtime"]):
        assert s in text
    assert "FAIL: pipeline median" in text and "PASS" in text and "SKIP" in text
    assert bench.main(_args(json=False, dlib=False, strict=True)) == 1


def test_frames_folder_skips_faceless(tmp_path, capsys):
    import cv2

    (tmp_path / "a.jpg").write_bytes(bench.FRAME_FILE.read_bytes())
    cv2.imwrite(str(tmp_path / "blank.png"), np.full((120, 160, 3), 128, np.uint8))
    rc, r = _run(capsys, dlib=False, repeat=2, frames=tmp_path)
    assert rc == 0
    assert [f["frame"] for f in r["frames"]] == ["a.jpg"]
    assert r["skipped"] == [{"frame": "blank.png", "reason": "no face found by faceunlock"}]
    _check_stats(r["stages"], 2)
