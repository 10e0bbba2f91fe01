"""The shipped MiniFASNet TFLite models against the PyTorch reference, on real frames.

Frames: the bundled public-domain images (astronaut, grace_hopper, frame_640x480) and their
mirror images; boxes from faceunlock's BlazeFace; 80×80 crops by upstream's rule.

Which reference is used is decided at run time and printed:

* **torch** — when ``torch`` is importable and the ``.pth`` sources are in
  ``../shared/models/minifasnet`` (sha256 checked): logits computed now by
  ``tools/convert_minifasnet.torch_logits`` (functional torch on the unfolded state dict,
  which ``tools/minifasnet_reference.py`` checks against upstream's own network class);
* **stored** — otherwise (the project's venv and CI have no torch): the logits in
  ``tests/data/minifasnet_reference.npz``, computed by ``tools/minifasnet_reference.py`` with
  upstream's torch network (torch 2.13.0) on the same crops.

Bar: max |TFLite − torch| logit difference ≤ 1e-4 for each model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import faceunlock as fu
from faceunlock.liveness.texture import TEXTURE_MODELS, TextureCheck

REPO = Path(__file__).resolve().parents[1]
NPZ = REPO / "tests" / "data" / "minifasnet_reference.npz"
PTH_DIR = REPO.parent / "shared" / "models" / "minifasnet"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(NPZ) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def check() -> TextureCheck:
    # the stored crops were cut around the detector box as it is (no RetinaFace correction)
    return TextureCheck(threads=1, correct_box=False)


def _frames(names) -> list[np.ndarray]:
    out = []
    for n in names:
        base = str(n).removesuffix("_mirrored")
        img = fu.load_image(REPO / "faceunlock" / "data" / f"{base}.jpg")
        out.append(np.ascontiguousarray(img[:, ::-1]) if str(n).endswith("_mirrored") else img)
    return out


def _torch_reference():
    """(torch_logits function, {arch: state dict}) or None when torch or the sources are absent."""
    if importlib.util.find_spec("torch") is None:
        return None
    spec = importlib.util.spec_from_file_location("convert_minifasnet", REPO / "tools" / "convert_minifasnet.py")
    cm = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("convert_minifasnet", cm)
    spec.loader.exec_module(cm)
    sds = {}
    for s in cm.SOURCES:
        p = PTH_DIR / s.pth
        if not p.is_file():
            return None
        assert hashlib.sha256(p.read_bytes()).hexdigest() == s.sha256, f"{p} is not the published file"
        sds[s.arch] = cm.load_state_dict(p)
    return cm.torch_logits, sds


def test_reference_file_matches_the_bundled_frames(ref):
    frames = _frames(ref["names"])
    assert [hashlib.sha256(f.tobytes()).hexdigest() for f in frames] == list(ref["frames_sha256"])
    assert list(ref["source_sha256"]) == [
        "a5eb02e1843f19b5386b953cc4c9f011c3f985d0ee2bb9819eea9a142099bec0",
        "84ee1d37d96894d5e82de5a57df044ef80a58be2b218b5ed7cdfd875ec2f5990",
    ]


def test_crops_match_upstream_crop_rule(ref, check):
    """TextureCheck.crops reproduces upstream's CropImage output byte for byte (stored crops were
    cut by upstream's own code from the same frames and boxes)."""
    for frame, box, i in zip(_frames(ref["names"]), ref["boxes"], range(len(ref["names"]))):
        crops = check.crops(frame, box)
        for m in TEXTURE_MODELS:
            np.testing.assert_array_equal(crops[m.scale], ref[f"crops_{m.scale}"][i],
                                          err_msg=f"{ref['names'][i]} scale {m.scale}")


def test_detector_box_as_stored(ref, engine):
    """The boxes the reference was made with are what faceunlock's detector gives today (so the
    end-to-end path frame -> box -> crop -> logits is what the parity covers)."""
    for frame, box, name in zip(_frames(ref["names"]), ref["boxes"], ref["names"]):
        got = engine.detect(frame)[0].box
        assert np.max(np.abs(np.array(got) - box)) < 1.0, name


def test_logits_parity(ref, check):
    torch_ref = _torch_reference()
    source = "torch (computed now)" if torch_ref else "stored (tests/data/minifasnet_reference.npz)"
    worst = {}
    for m in TEXTURE_MODELS:
        crops = ref[f"crops_{m.scale}"]
        if torch_ref:
            fn, sds = torch_ref
            want = fn(sds[m.name], crops.astype(np.float32))
            # the stored reference must agree with torch too
            assert np.max(np.abs(want - ref[f"logits_{m.name}"])) <= 1e-5
        else:
            want = ref[f"logits_{m.name}"]
        got = np.stack([check.logits_of_crops({mm.scale: ref[f"crops_{mm.scale}"][i] for mm in TEXTURE_MODELS})[m.name]
                        for i in range(len(crops))])
        worst[m.name] = float(np.max(np.abs(got - want)))
        # the crops are not trivial: the models disagree between frames by far more than the bar
        assert np.ptp(want, axis=0).max() > 100 * TOLERANCE
    print(f"\nMiniFASNet parity against {source}: max |logit diff| "
          + ", ".join(f"{k} {v:.2g}" for k, v in worst.items()))
    assert all(v <= TOLERANCE for v in worst.values()), worst


def test_parity_bar_is_discriminating(ref, check):
    """Feeding one model the other model's crops moves the logits far beyond the bar: a crop or
    model mix-up could not pass the parity test."""
    v2, v1se = TEXTURE_MODELS
    swapped = check.logits_of_crops({v2.scale: ref[f"crops_{v1se.scale}"][0], v1se.scale: ref[f"crops_{v2.scale}"][0]})
    assert np.max(np.abs(swapped[v2.name] - ref[f"logits_{v2.name}"][0])) > 100 * TOLERANCE
