"""Labelled image folders: ``ROOT/<identity>/<image>`` (LFW, ORL, any photo collection)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["LabelledImage", "scan", "IMAGE_EXTS"]

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class LabelledImage:
    identity: str
    path: Path


def scan(roots: list[Path], exclude: tuple[str, ...] = ()) -> list[LabelledImage]:
    """Every image in the identity folders directly below each root, sorted.

    The identity is ``<root folder name>/<identity folder>`` unless only one root is given
    (then the folder name alone), so equal folder names in different roots stay apart.
    Folders whose name is in ``exclude`` are skipped (e.g. unlabelled group photos).
    """
    out = []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image root not found: {root}")
        for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in exclude):
            ident = d.name if len(roots) == 1 else f"{root.name}/{d.name}"
            for f in sorted(d.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_EXTS:
                    out.append(LabelledImage(ident, f))
    return out
