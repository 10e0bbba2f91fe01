"""--challenge on the command line, and eval-liveness's command glue (no ../shared needed)."""

from __future__ import annotations

from pathlib import Path

import cv2

from faceunlock import cli
from faceunlock.image import load_image

DATA = Path(cli.__file__).resolve().parent / "data"


def _folder(out: Path, n: int = 8) -> Path:
    img = load_image(DATA / "astronaut.jpg")
    out.mkdir(parents=True)
    h, w = img.shape[:2]
    for i in range(n):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), -6 + 12 * i / (n - 1), 0.95)
        cv2.imwrite(str(out / f"{i:03d}.png"), cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)[:, :, ::-1])
    return out


def test_unlock_challenge_flag(tmp_path, capsys):
    src = str(_folder(tmp_path / "frames"))
    store = ["--store", str(tmp_path / "s" / "t.fus"), "--key-file", str(tmp_path / "k" / "t.key")]
    assert cli.main(store + ["enroll", "astro", "--source", src, "--quiet"]) == 0
    capsys.readouterr()
    # a challenge needs the liveness check
    assert cli.main(store + ["unlock", "astro", "--source", src, "--no-liveness", "--challenge"]) == 2
    assert "--challenge needs the liveness check" in capsys.readouterr().err
    # the prompts are shown on stderr; 8 slightly rotated stills never answer them
    code = cli.main(store + ["unlock", "astro", "--source", src, "--challenge"])
    out, err = capsys.readouterr()
    assert code == 1 and "challenge: " in err, (out, err)
    assert "denied" in out


def test_eval_liveness_is_registered_and_lives_in_evaluation():
    import faceunlock.liveness as L

    text = cli.build_parser().format_help()
    assert "eval-liveness" in text
    assert not hasattr(L, "cli")  # STYLE.md: liveness must not import evaluation
    ap = cli.build_parser()
    args = ap.parse_args(["eval-liveness", "x", "--dev2", "y", "--no-unlock"])
    assert args.func.__module__ == "faceunlock.evaluation.liveness_cli"


def test_pam_auth_and_demo_take_challenge():
    ap = cli.build_parser()
    assert ap.parse_args(["pam-auth", "--challenge"]).challenge is True
    assert ap.parse_args(["pam-auth"]).challenge is False
    assert ap.parse_args(["demo", "--challenge"]).challenge is True
