"""Dev-data images with their person, demographic group, source and split half.

One loader for every evaluation that reports per group (``calibrate --by-group``,
per-group ``eval-unlock``). It reads the development sets next to the repository
(``../shared/data``: ``faces-dev`` and ``faces-dev2``); nothing here ships data.

Sources (``DevImage.source``) and groups (``DevImage.group``):

==============  ===========================================================  =====================
source          images                                                       group
==============  ===========================================================  =====================
``utkface``     faces-dev2/utkface: 4,000 adults, 1,000 per labelled group;  ``White``, ``Black``,
                no person ids (``person`` = the file, see below)             ``East Asian``,
                                                                             ``South Asian``
``casia``       faces-dev2/casia_facev5: 20 Chinese subjects × 5             ``East Asian``
``lfw_dev``     faces-dev/lfw_dev/images: 283 images, 202 people             ``LFW dev``
``orl``         faces-dev/orl_att_faces: 40 subjects × 10 (grey)             ``ORL``
``faceapi_bbt`` faces-dev/faceapi_bbt: 8 actors × 5 (grey crops)             ``face-api BBT``
==============  ===========================================================  =====================

The faces-dev sources carry no demographic labels; they are reported as groups of their
own (mostly Western adults).

**Split by person** (:func:`split_half`, fixed, no seed to remember): within each source
(and, for UTKFace, each group) the persons are sorted by ``sha256("<source>:<person>")``
and the first ``ceil(n / 2)`` form the ``"tuning"`` half, the rest the ``"reporting"``
half. Every image of a person is on one side. CASIA: 10 / 10 subjects; ORL 20 / 20;
face-api 4 / 4; LFW dev 101 / 101 people; UTKFace 500 / 500 files per group.
UTKFace has no person ids, so it is split by file: a person that UTKFace holds more than
once can straddle the halves (and give same-person "impostor" pairs; see
``faceunlock.evaluation.calibrate``).

Pairs are formed within one source (never across sources) and within one group: two images
of different persons are an impostor pair, two of the same person a genuine pair.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .dataset import IMAGE_EXTS

__all__ = [
    "DevImage", "SOURCES", "UTK_GROUPS", "HALVES", "default_shared_root", "split_half", "load_dev_images",
    "by_group", "pair_indices",
]

HALVES = ("tuning", "reporting")
UTK_GROUPS = ("White", "Black", "East Asian", "South Asian")
SOURCES = ("utkface", "casia", "lfw_dev", "orl", "faceapi_bbt")
# Replicated border added around each image before detection (fraction of the image's
# larger side): the crops are tight, and the detector wants some context. 0.3 is the value
# every faces-dev calibration used.
PAD = {"utkface": 0.3, "casia": 0.3, "lfw_dev": 0.3, "orl": 0.3, "faceapi_bbt": 0.3}
FACES_DEV_GROUP = {"lfw_dev": "LFW dev", "orl": "ORL", "faceapi_bbt": "face-api BBT"}


@dataclass(frozen=True)
class DevImage:
    """One dev image.

    Attributes:
        path: the image file.
        person: identity id, unique across sources (``"<source>/<id>"``); for UTKFace, which
            has no ids, ``"utkface/<file name>"`` (one "person" per file).
        group: demographic group (UTKFace labels; CASIA → ``"East Asian"``) or, for the
            unlabelled faces-dev sources, the source's own group name.
        source: one of :data:`SOURCES`.
        half: ``"tuning"`` or ``"reporting"`` (:func:`split_half`).
        pad: replicated border to add before detection (fraction of the larger side).
        meta: extra labels as text (UTKFace: gender, age).
    """

    path: Path
    person: str
    group: str
    source: str
    half: str
    pad: float
    meta: tuple[tuple[str, str], ...] = ()


def default_shared_root() -> Path:
    """``../shared/data`` next to the repository (where CI and dev machines keep it)."""
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def _rank_key(source: str, person: str) -> str:
    return hashlib.sha256(f"{source}:{person}".encode()).hexdigest()


def split_half(source: str, persons: list[str]) -> dict[str, str]:
    """person → ``"tuning"`` | ``"reporting"``: persons sorted by sha256 of
    ``"<source>:<person>"``, the first ``ceil(n / 2)`` are tuning."""
    ordered = sorted(set(persons), key=lambda p: _rank_key(source, p))
    k = math.ceil(len(ordered) / 2)
    return {p: HALVES[0] if i < k else HALVES[1] for i, p in enumerate(ordered)}


def _utkface(root: Path) -> list[DevImage]:
    d = root / "faces-dev2" / "utkface"
    rows = list(csv.DictReader(open(d / "labels.csv", newline="")))
    out = []
    for group in UTK_GROUPS:
        mine = [r for r in rows if r["group"] == group]
        halves = split_half(f"utkface/{group}", [r["file"] for r in mine])
        for r in mine:
            out.append(DevImage(d / r["file"], f"utkface/{Path(r['file']).name}", group, "utkface",
                                halves[r["file"]], PAD["utkface"],
                                (("gender", r["gender"]), ("age", r["age"]))))
    return out


def _casia(root: Path) -> list[DevImage]:
    d = root / "faces-dev2" / "casia_facev5"
    rows = list(csv.DictReader(open(d / "labels.csv", newline="")))
    halves = split_half("casia", [r["person_id"] for r in rows])
    return [DevImage(d / r["file"], f"casia/{r['person_id']}", "East Asian", "casia", halves[r["person_id"]],
                     PAD["casia"], (("gender", r["gender"]),)) for r in rows]


def _folders(root: Path, source: str, sub: str, exclude: tuple[str, ...] = ()) -> list[DevImage]:
    d = root / "faces-dev" / sub
    items = []
    for pd in sorted(p for p in d.iterdir() if p.is_dir() and p.name not in exclude):
        for f in sorted(pd.rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_EXTS:
                items.append((pd.name, f))
    halves = split_half(source, [p for p, _ in items])
    return [DevImage(f, f"{source}/{p}", FACES_DEV_GROUP[source], source, halves[p], PAD[source]) for p, f in items]


def load_dev_images(root: str | Path | None = None, sources: tuple[str, ...] = SOURCES) -> list[DevImage]:
    """Every dev image of ``sources`` (default: all of :data:`SOURCES`), in a fixed order.

    ``root`` is the folder holding ``faces-dev`` and ``faces-dev2`` (default
    :func:`default_shared_root`). Raises FileNotFoundError when a source is missing.
    """
    root = Path(root) if root is not None else default_shared_root()
    loaders = {
        "utkface": lambda: _utkface(root),
        "casia": lambda: _casia(root),
        "lfw_dev": lambda: _folders(root, "lfw_dev", "lfw_dev/images"),
        "orl": lambda: _folders(root, "orl", "orl_att_faces"),
        "faceapi_bbt": lambda: _folders(root, "faceapi_bbt", "faceapi_bbt", exclude=("group_photos",)),
    }
    out: list[DevImage] = []
    for s in sources:
        if s not in loaders:
            raise ValueError(f"unknown source {s!r}; expected some of {SOURCES}")
        out += loaders[s]()
    return out


def by_group(images: list[DevImage]) -> dict[str, list[int]]:
    """group → indices into ``images`` (in first-seen group order)."""
    out: dict[str, list[int]] = defaultdict(list)
    for i, im in enumerate(images):
        out[im.group].append(i)
    return dict(out)


def pair_indices(images: list[DevImage], idx: list[int]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(genuine, impostor) unordered pairs among ``idx`` (indices into ``images``), pairing
    only images of the same source and the same split half."""
    gen, imp = [], []
    for a in range(len(idx)):
        ia = images[idx[a]]
        for b in range(a + 1, len(idx)):
            ib = images[idx[b]]
            if ia.source != ib.source or ia.half != ib.half:
                continue
            (gen if ia.person == ib.person else imp).append((idx[a], idx[b]))
    return gen, imp
