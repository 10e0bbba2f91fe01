"""faceunlock.liveness.texture: upstream's crop rule on hand-computed cases, the real score,
lazy loading, checksum and input errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import faceunlock as fu
from faceunlock.liveness import texture
from faceunlock.liveness.texture import (CROP_SIZE, TextureCheck, crop, crop_box, retinaface_box, softmax,
                                         to_upstream_box)


def test_upstream_box_truncates_like_upstream():
    assert to_upstream_box((10.9, 20.2, 29.5, 39.99)) == (10, 20, 19, 20)
    assert to_upstream_box((-3.7, 5, 20, 30)) == (-3, 5, 24, 26)  # int() truncates toward 0


@pytest.mark.parametrize(
    "hw, box, scale, want",
    [
        # centred box, plain 2.7× scaling: w = h = 20 -> 54, centre (100, 50)
        ((100, 200), (90, 40, 109, 59), 2.7, (73, 23, 127, 77)),
        # left edge: shifted right by 17, not clipped
        ((100, 200), (0, 40, 19, 59), 2.7, (0, 23, 54, 77)),
        # frame too low for 4.0×: scale limited to (H-1)/h = 49/20, then shifted down by 4.5
        ((50, 200), (90, 10, 109, 29), 4.0, (75, 0, 124, 49)),
        # bottom-right corner: shifted up-left by 18
        ((100, 100), (80, 80, 99, 99), 2.7, (45, 45, 99, 99)),
    ],
)
def test_crop_box_hand_computed(hw, box, scale, want):
    assert crop_box(hw, box, scale) == want


def test_crop_resizes_the_inclusive_rectangle():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (100, 200, 3), dtype=np.uint8)
    c = crop(frame, (90, 40, 109, 59), 2.7)
    assert c.shape == (CROP_SIZE, CROP_SIZE, 3) and c.dtype == np.uint8
    import cv2

    np.testing.assert_array_equal(c, cv2.resize(frame[23:78, 73:128], (CROP_SIZE, CROP_SIZE)))


def test_retinaface_box():
    x0, y0, x1, y1 = retinaface_box((100, 200, 198, 293))  # 98 x 93 px
    assert x1 - x0 == pytest.approx(100) and y1 - y0 == pytest.approx(100)
    assert (x0 + x1) / 2 == pytest.approx(149)
    assert (y0 + y1) / 2 == pytest.approx(246.5 - 5)  # 5 % of the new height up


def test_default_check_crops_around_the_corrected_box(astronaut, engine):
    box = engine.detect(astronaut)[0].box
    a = TextureCheck().crops(astronaut, box)
    b = TextureCheck(correct_box=False).crops(astronaut, retinaface_box(box))
    for s in a:
        np.testing.assert_array_equal(a[s], b[s])
    assert not np.array_equal(a[2.7], TextureCheck(correct_box=False).crops(astronaut, box)[2.7])


def test_crops_are_bgr_of_the_rgb_frame(astronaut, engine):
    tc = TextureCheck(correct_box=False)
    box = engine.detect(astronaut)[0].box
    before = astronaut.copy()
    crops = tc.crops(astronaut, box)
    np.testing.assert_array_equal(astronaut, before)
    assert sorted(crops) == [2.7, 4.0]
    bgr = np.ascontiguousarray(astronaut[:, :, ::-1])
    for s, c in crops.items():
        np.testing.assert_array_equal(c, crop(bgr, box, s))
    # the 4.0x crop sees more context than the 2.7x one: different pixels
    assert not np.array_equal(crops[2.7], crops[4.0])


def test_score_is_half_the_summed_real_probability(grace_hopper, engine):
    tc = TextureCheck(threads=1)
    assert tc._models is None  # nothing loaded before the first score
    box = engine.detect(grace_hopper)[0].box
    probs = tc.scores(grace_hopper, box)
    assert sorted(probs) == ["MiniFASNetV1SE", "MiniFASNetV2"]
    for p in probs.values():
        assert p.shape == (3,) and abs(p.sum() - 1) < 1e-9 and np.all(p >= 0)
    s = tc.score(grace_hopper, box)
    assert 0.0 <= s <= 1.0
    assert s == pytest.approx((probs["MiniFASNetV2"][1] + probs["MiniFASNetV1SE"][1]) / 2, abs=1e-12)
    lg = tc.logits(grace_hopper, box)
    for k in probs:
        np.testing.assert_allclose(softmax(lg[k]), probs[k], atol=1e-12)


def test_softmax_stable():
    p = softmax(np.array([1000.0, 0.0, -1000.0]))
    assert np.all(np.isfinite(p)) and p[0] == pytest.approx(1.0)


def test_changed_model_file_is_refused(monkeypatch, astronaut):
    bad = tuple(dataclasses.replace(m, sha256="0" * 64) for m in texture.TEXTURE_MODELS)
    monkeypatch.setattr(texture, "TEXTURE_MODELS", bad)
    with pytest.raises(fu.ModelError, match="sha256"):
        TextureCheck().score(astronaut, (176, 82, 272, 178))


@pytest.mark.parametrize(
    "frame, box",
    [
        (np.zeros((64, 64, 3), np.float32), (10, 10, 30, 30)),
        (np.zeros((64, 64), np.uint8), (10, 10, 30, 30)),
        (np.zeros((64, 64, 3), np.uint8), (30, 30, 28, 40)),  # no area
        (np.zeros((64, 64, 3), np.uint8), (np.nan, 10, 30, 30)),
    ],
)
def test_bad_input_raises_image_error(frame, box):
    with pytest.raises(fu.ImageError):
        TextureCheck().crops(frame, box)


def test_texture_eval_split_keeps_each_person_on_one_side():
    """The per-frame evaluation's split: every item of one person key (a pair id's live and
    attack recordings, the two MEAD M030 clips) is on one side, both halves hold live and attack
    material, and it is eval-liveness's split where that module exposes it (skipped without
    the dev share)."""
    from faceunlock.evaluation import texture_eval as te

    root = te.default_shared_root()
    if not (root / "faces-dev2").is_dir():
        pytest.skip(f"dev data not found: {root}")
    its = te.items(root, lfw=2)
    side: dict[str, set[str]] = {}
    for it in its:
        side.setdefault(it.person, set()).add(it.half)
    assert all(len(h) == 1 for h in side.values()), {k: v for k, v in side.items() if len(v) > 1}
    assert sum(it.person == "v:MEAD_M030" for it in its) == 2
    assert {it.half for it in its if it.person == "a:P03"} == {"tuning"}
    assert {it.label for it in its if it.person == "a:P03"} == {"live", "replay"}
    for half in ("tuning", "reporting"):
        got = {(it.source, it.label == "live") for it in its if it.half == half}
        assert {("videos2", True), ("attack_videos", True), ("attack_videos", False), ("generator", False),
                ("nuaa", True), ("nuaa", False), ("tight_crops", True), ("tight_crops", False)} <= got
    le = pytest.importorskip("faceunlock.evaluation.liveness_eval")
    if not all(hasattr(le, n) for n in ("split_people", "dev_clips", "still_items")):
        pytest.skip("eval-liveness does not expose its split")
    dev, dev2 = root / "faces-dev" / "video_liveness", root / "faces-dev2"
    groups: dict[str, list[str]] = {}
    for c in le.dev_clips(dev, dev2):
        groups.setdefault(c.group, []).append(c.person)
    for _, _, person, group, _ in le.still_items(dev, dev2):
        groups.setdefault(group, []).append(person)
    theirs = le.split_people(groups)
    ours = {it.person: it.half for it in its if it.source != "generator"}
    assert {k: {"tune": "tuning", "report": "reporting"}[v] for k, v in theirs.items()} == ours


def test_texture_eval_threshold_and_table_on_synthetic_scores():
    from faceunlock.evaluation.texture_eval import Sample, choose_threshold, quantile_table

    def s(src, label, half, v, item="x"):
        return Sample(src, label, "p-" + item, half, item, 0, 1, v, v)

    live = [s("videos2", "live", "tuning", v, f"l{i}") for i, v in enumerate([0.6, 0.7, 0.9, 0.95, 1.0])]
    att = [s("generator", "print", "tuning", v, f"a{i}") for i, v in enumerate([0.0, 0.1, 0.2, 0.3])]
    other = [s("tight_crops", "live", "tuning", 0.0), s("videos2", "live", "reporting", 0.0)]  # never tuned on
    c = choose_threshold(live + att + other, "raw")
    assert c["separated"] and c["threshold"] == pytest.approx(0.45) and c["eer"] == 0.0
    att.append(s("generator", "screen", "tuning", 0.8, "a9"))  # one attack above two live frames
    c = choose_threshold(live + att, "raw")
    assert not c["separated"] and c["eer"] == pytest.approx(0.2)
    table = quantile_table(live + att, "raw", threshold=0.75)
    row = next(line for line in table.splitlines() if line.startswith("videos2"))
    assert "2/5" in row  # 0.6 and 0.7 are below 0.75
