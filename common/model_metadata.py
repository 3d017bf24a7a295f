"""A model's metadata file: everything the service needs to know without loading it.

The metadata sits next to the model as ``<file name>.json`` (``default.h5`` ->
``default.h5.json``). Training writes it; the worker reads the input size, scaling and
class order from it; the API serves it from ``/model-info`` without TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.labels import CLASSES

DEFAULT_INPUT_SIZE: tuple[int, int] = (128, 128)
DEFAULT_SCALE: float = 1.0 / 255.0
FORMAT_NAMES: dict[str, str] = {
    "h5": "Keras (.h5)",
    "keras": "Keras (.keras)",
    "savedmodel": "TensorFlow SavedModel",
    "onnx": "ONNX",
    "tflite": "TFLite",
}


@dataclass(frozen=True)
class ModelMetadata:
    """Describes one model file; ``input_size`` is (width, height)."""

    version: str
    description: str
    file: str
    sha256: str
    format: str = "h5"
    classes: tuple[str, ...] = CLASSES
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE
    scale: float = DEFAULT_SCALE
    extra: dict = field(default_factory=dict)

    @classmethod
    def for_model(cls, model_path: Path) -> ModelMetadata:
        """Read the metadata file that belongs to ``model_path``."""
        raw = json.loads(metadata_path_for(model_path).read_text())
        raw["classes"] = tuple(raw["classes"])
        raw["input_size"] = tuple(raw["input_size"])
        return cls(**raw)

    def write_for(self, model_path: Path) -> Path:
        path = metadata_path_for(model_path)
        path.write_text(json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n")
        return path

    @property
    def format_name(self) -> str:
        return FORMAT_NAMES.get(self.format, self.format)

    @property
    def input_size_text(self) -> str:
        width, height = self.input_size
        return f"{width}x{height} pixels"


def check_classes(classes: tuple[str, ...] | list[str]) -> None:
    """A model's classes must be distinct names of the service's classes (any order)."""
    if not all(name in CLASSES for name in classes) or len(set(classes)) != len(classes):
        raise ValueError(
            f"classes must be distinct names from {', '.join(CLASSES)}; got {list(classes)}."
        )


def metadata_path_for(model_path: Path) -> Path:
    """``default.h5`` -> ``default.h5.json``; a SavedModel dir ``sm/`` -> ``sm.json``.

    One metadata file per model file, so exports of the same model sit side by side.
    """
    return model_path.with_name(model_path.name + ".json")


def model_format(path: Path) -> str:
    """The format key of a model path: a directory is a SavedModel, else the suffix."""
    if path.is_dir():
        return "savedmodel"
    suffix = path.suffix.lstrip(".").lower()
    if suffix not in FORMAT_NAMES:
        raise ValueError(
            f"{path.name}: unknown model format; use one of {', '.join(FORMAT_NAMES)}."
        )
    return suffix


def file_sha256(path: Path) -> str:
    """sha256 of a model file; for a SavedModel directory, of its files and names."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as stream:
            for chunk in iter(lambda s=stream: s.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
