"""eval-liveness's generator set: source portraits split by person, deterministic, counted;
attacks reproducible per portrait; the fast flat-sheet render equals the triangle render."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faceunlock.demo import data_image
from faceunlock.evaluation import attacks as A
from faceunlock.evaluation import liveness_eval as E
from faceunlock.synth import render_sheet

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEV = SHARED / "faces-dev" / "video_liveness"
DEV2 = SHARED / "faces-dev2"


def test_pick_spreads_deterministically():
    items = [f"p{i:03d}" for i in range(202)]
    assert E._pick(items, 101) == items[::2]
    got = E._pick(items, 80)
    assert len(got) == len(set(got)) == 80 and got[0] == "p000" and got[-1] >= "p199" and got == sorted(got)
    assert E._pick(items, 12)[:3] == ["p000", "p016", "p033"]
    assert E._pick(items, 500) == items
    assert E._pick(items, 0) == [] and E._pick([], 5) == []


def test_split_all_deals_each_generator_group_alternately():
    src = [E.Portrait(n, g, np.zeros((2, 2, 3), np.uint8)) for n, g in
           [("lfw/B", "generator-lfw"), ("lfw/A", "generator-lfw"), ("lfw/C", "generator-lfw"),
            ("casia/001", "generator-casia"), ("casia/000", "generator-casia"), ("astronaut", "generator")]]
    split = E.split_all([], [], src)
    assert split == {"g:lfw/A": "tune", "g:lfw/B": "report", "g:lfw/C": "tune", "g:casia/000": "tune",
                     "g:casia/001": "report", "g:astronaut": "tune"}


@pytest.mark.skipif(not (DEV.is_dir() and DEV2.is_dir()), reason="dev data not found")
def test_sources_are_one_per_person_and_split_by_person():
    a = E._sources(DEV, E.GENERATOR_LFW, None, DEV2, E.GENERATOR_CASIA)
    b = E._sources(DEV, E.GENERATOR_LFW, None, DEV2, E.GENERATOR_CASIA)
    assert [p.name for p in a] == [p.name for p in b]  # deterministic
    names = [p.name for p in a]
    assert len(names) == len(set(names))  # one portrait per person
    groups = {g: sum(p.group == g for p in a) for g in {p.group for p in a}}
    assert groups == {"generator": 3, "generator-lfw": E.GENERATOR_LFW, "generator-casia": E.GENERATOR_CASIA}
    lfw_people = {p.name.split("/", 1)[1] for p in a if p.group == "generator-lfw"}
    assert lfw_people <= {d.name for d in (DEV.parent / "lfw_dev" / "images").iterdir()}  # key = identity folder
    assert all(min(p.image.shape[:2]) >= 150 and p.image.dtype == np.uint8 for p in a)  # no tiny crops
    split = E.split_all(E.dev_clips(DEV, DEV2), E.still_items(DEV, DEV2), a)
    for g, n in groups.items():
        halves = [split[f"g:{p.name}"] for p in a if p.group == g]
        assert abs(halves.count("tune") - halves.count("report")) <= 1, g
    # a smaller count takes a subset spread over the alphabet, not the first names
    few = [p.name for p in E._sources(DEV, 12, None, None, 0) if p.group == "generator-lfw"]
    assert len(few) == 12 and few[0] < few[-1] and few[-1][4] >= "R"


def test_generator_clips_depend_only_on_seed_and_name():
    img = data_image("grace_hopper")
    a = E.generator_clips(img, "x", seed=0, n=2)
    b = E.generator_clips(img, "x", seed=0, n=2)
    c = E.generator_clips(img, "y", seed=0, n=2)
    assert list(a) == ["print", "bent print", "screen", "print held still"]
    assert all(len(v) == 2 and v[0].shape == (480, 480, 3) for v in a.values())
    assert all(np.array_equal(a[k][1], b[k][1]) for k in a)
    assert not np.array_equal(a["print"][0], c["print"][0])


@pytest.mark.parametrize("pose", [dict(yaw_deg=20.0, pitch_deg=-10.0, roll_deg=5.0, centre=(250.0, 230.0),
                                       scale=0.9, distance=2.0),
                                  dict(yaw_deg=-25.0, pitch_deg=15.0, roll_deg=-8.0, scale=1.1, distance=3.0)])
def test_flat_sheet_render_matches_triangle_render(pose):
    sheet = A.fit_portrait(data_image("astronaut"), 400)
    bg = A.background(np.random.default_rng(0), (480, 480))
    ref = render_sheet(sheet, bg, bend=0.0, **pose).astype(int)
    got = A.render_flat_sheet(sheet, bg, **pose).astype(int)
    d = np.abs(ref - got)
    assert d.mean() < 1.0 and np.quantile(d, 0.99) <= 6  # interpolation only; edges anti-aliased differently
    moved = A.render_flat_sheet(sheet, bg, **{**pose, "yaw_deg": pose["yaw_deg"] + 3})
    assert np.abs(moved.astype(int) - got).mean() > 3.0  # the test can see a wrong pose


def test_borderline_hold_only_in_band_and_never_for_still_faces():
    from faceunlock.liveness import tracks as T

    rng = np.random.default_rng(0)
    base = rng.uniform(100, 300, (468, 3))
    still = np.stack([base + rng.normal(0, 0.05, base.shape) for _ in range(40)])
    assert T.borderline_hold(still, 15.0, 0.9, 0.46) is None  # above the band: never held
    assert T.borderline_hold(still, 15.0, 0.40, 0.46) is None  # below the threshold: not this cue's business
    assert T.borderline_hold(still[:10], 15.0, 0.5, 0.46) == "wait"  # < 2 s of face frames
    assert T.borderline_hold(still, 15.0, 0.5, 0.46) is None  # still: too little motion, never held


def test_borderline_hold_holds_a_moved_sheet_not_a_turning_head():
    import faceunlock as fu
    from faceunlock import synth
    from faceunlock.liveness import tracks as T

    engine = fu.FaceEngine(threads=1)
    img = data_image("astronaut")
    lm = engine.detect(img)[0].landmarks
    head = [f[0].landmarks for f in map(engine.detect, synth.render_head_motion(img, lm, 30)) if f]
    # a generated print moved by hand (seed 0: the judge sees motion but no parallax)
    flat = [f[0].landmarks for f in map(engine.detect, A.print_attack(img, np.random.default_rng(0), 30)) if f]
    assert len(head) == len(flat) == 30
    assert T.borderline_hold(flat, 15.0, 0.5, 0.46) == "flat"
    assert T.borderline_hold(head, 15.0, 0.5, 0.46) is None
    assert T.borderline_hold(flat, 15.0, 0.7, 0.46) is None  # outside the band: the cue is silent
