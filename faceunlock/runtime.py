"""The one place that knows which TFLite interpreter is installed.

``ai_edge_litert`` (LiteRT, the successor of tflite-runtime, works with numpy 2)
is preferred; ``tflite_runtime`` (needs numpy<2) is the fallback. Nothing is
imported until the first model is loaded.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelError, RuntimeMissingError

__all__ = ["Model", "load_model", "runtime_name", "model_path", "sha256_file"]

_MODELS_DIR = Path(__file__).resolve().parent / "models"


def _interpreter_class() -> tuple[type, str]:
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]

        return Interpreter, "tflite-runtime"
    except ImportError:
        pass
    raise RuntimeMissingError(
        "no TFLite runtime found: install 'ai-edge-litert' (preferred) or "
        "'tflite-runtime' (the fallback; needs numpy<2), e.g. pip install ai-edge-litert"
    )


def runtime_name() -> str:
    """Name of the runtime that :func:`load_model` uses ('ai-edge-litert' or 'tflite-runtime').

    The environment variable ``FACEUNLOCK_RUNTIME=tflite-runtime`` forces the fallback
    (used by CI to prove both paths)."""
    return _select()[1]


def _select() -> tuple[type, str]:
    forced = os.environ.get("FACEUNLOCK_RUNTIME", "").strip().lower()
    if forced in ("tflite-runtime", "tflite_runtime"):
        try:
            from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]
        except ImportError as exc:
            raise RuntimeMissingError(
                "FACEUNLOCK_RUNTIME=tflite-runtime but 'tflite-runtime' is not installed"
            ) from exc
        return Interpreter, "tflite-runtime"
    return _interpreter_class()


def model_path(name: str) -> Path:
    """Path of a model shipped in ``faceunlock/models``."""
    return _MODELS_DIR / name


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Model:
    """A loaded TFLite model with one or more float32 inputs and outputs.

    ``run`` copies its inputs in and its outputs out, so results stay valid after
    the next call. Not thread-safe: use one :class:`Model` per thread.
    """

    path: Path
    interpreter: Any
    runtime: str
    input_details: list[dict]
    output_details: list[dict]

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        if len(inputs) != len(self.input_details):
            raise ModelError(
                f"{self.path.name} takes {len(self.input_details)} inputs, got {len(inputs)}"
            )
        for detail, value in zip(self.input_details, inputs):
            value = np.asarray(value, dtype=detail["dtype"])
            if tuple(value.shape) != tuple(detail["shape"]):
                self.interpreter.resize_tensor_input(detail["index"], list(value.shape))
                self.interpreter.allocate_tensors()
                self._refresh()
                detail = next(d for d in self.input_details if d["index"] == detail["index"])
            self.interpreter.set_tensor(detail["index"], value)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(d["index"]).copy() for d in self.output_details]

    def _refresh(self) -> None:
        self.input_details = self.interpreter.get_input_details()
        self.output_details = self.interpreter.get_output_details()


def load_model(path: str | os.PathLike[str], *, threads: int | None = None) -> Model:
    """Load a ``.tflite`` file on the installed runtime.

    ``threads=None`` lets the runtime choose; the shipped models are small and a
    single thread is usually fastest per frame on 2-core devices.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    cls, name = _select()
    try:
        interp = cls(model_path=str(path), num_threads=threads)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot load {path.name} on {name}: {exc}") from exc
    return Model(
        path=path,
        interpreter=interp,
        runtime=name,
        input_details=interp.get_input_details(),
        output_details=interp.get_output_details(),
    )
