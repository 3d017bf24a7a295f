"""A model's metadata file: everything the service needs to know without loading it.

The metadata sits next to the model as ``<file name>.json`` (``default.h5`` ->
``default.h5.json``). Training writes it, and ``ecosnap models add`` for a model
trained elsewhere; the worker reads the input size, preprocessing, outputs and class
order from it; the API serves it from ``/model-info`` without TensorFlow. Files
written before preprocessing was declared carry only ``scale``: they read as the
``ecosnap`` preprocessing with that scale.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.errors import Refusal
from common.labels import CLASSES
from common.preprocessing import PRESETS, Preprocessing, PreprocessingError

DEFAULT_INPUT_SIZE: tuple[int, int] = (128, 128)
# What a model's output is: probabilities, or logits the service turns into them.
OUTPUTS = ("probabilities", "logits")
FORMAT_NAMES: dict[str, str] = {
    "h5": "Keras (.h5)",
    "keras": "Keras (.keras)",
    "savedmodel": "TensorFlow SavedModel",
    "onnx": "ONNX",
    "tflite": "TFLite",
}
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
# Names of the management routes under /models/, never version names.
RESERVED_VERSIONS = frozenset({"active", "rollback"})
MAX_DESCRIPTION_CHARS = 500


class MetadataError(Refusal):
    """Metadata the service refuses: a field of the wrong kind, or one that contradicts
    the model file it describes."""


class MetadataMissing(Refusal):
    """A model file without its metadata file: said in one line, with how to make it."""

    def __init__(self, model_path: Path) -> None:
        super().__init__(
            "metadata_missing",
            f"{model_path.name} has no metadata file ({metadata_path_for(model_path).name}); "
            f"make one with: ecosnap models add {model_path} --preset PRESET "
            f"(presets: {', '.join(PRESETS)})",
        )


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
    preprocessing: Preprocessing = PRESETS["ecosnap"]
    outputs: str = "probabilities"
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_upload(cls, fields: dict[str, Any], upload_format: str, sha256: str) -> ModelMetadata:
        """Metadata a client sent with a model file, checked field by field.

        ``file``, ``format`` and ``sha256`` describe the file as received, so they are
        ours to set: the client's, when given, must agree with them.
        """
        check_version_name(fields.get("version"))
        classes, size = fields.get("classes"), fields.get("input_size")
        description, extra = fields.get("description"), fields.get("extra", {})
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise MetadataError(
                "invalid_metadata", f"classes must be a list of names from {', '.join(CLASSES)}."
            )
        check_classes(classes)
        if not (
            isinstance(size, list)
            and len(size) == 2
            and all(isinstance(d, int) and 8 <= d <= 4096 for d in size)
        ):
            raise MetadataError("invalid_metadata", "input_size must be [width, height] in pixels.")
        preprocessing = preprocessing_of(fields)
        if fields.get("outputs", "probabilities") not in OUTPUTS:
            raise MetadataError("invalid_metadata", f"outputs is one of {', '.join(OUTPUTS)}.")
        if description is not None and (
            not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS
        ):
            raise MetadataError(
                "invalid_metadata",
                f"description must be text of at most {MAX_DESCRIPTION_CHARS} characters.",
            )
        if not isinstance(extra, dict):
            raise MetadataError("invalid_metadata", "extra must be a JSON object.")
        if fields.get("sha256") not in (None, sha256):
            raise MetadataError("sha256_mismatch", "The file's sha256 differs from the metadata's.")
        if fields.get("format") not in (None, upload_format):
            raise MetadataError(
                "format_mismatch", f"The file is {upload_format}; the metadata says otherwise."
            )
        return cls(
            version=fields["version"],
            description=description or f"Uploaded {upload_format} model.",
            file=f"model.{upload_format}",
            sha256=sha256,
            format=upload_format,
            classes=tuple(classes),
            input_size=(size[0], size[1]),
            preprocessing=preprocessing,
            outputs=fields.get("outputs", "probabilities"),
            extra=extra,
        )

    @classmethod
    def of_file(cls, path: Path, version: str, description: str) -> ModelMetadata:
        """Metadata for the model file at ``path``; name, sha256 and format are read off it."""
        return cls(version=version, description=description, file=path.name,
                   sha256=file_sha256(path), format=model_format(path))  # fmt: skip

    @classmethod
    def for_model(cls, model_path: Path) -> ModelMetadata:
        """Read the metadata file that belongs to ``model_path``."""
        try:
            raw = json.loads(metadata_path_for(model_path).read_text())
        except FileNotFoundError as exc:
            raise MetadataMissing(model_path) from exc
        return cls.from_fields(raw)

    @classmethod
    def from_fields(cls, raw: dict[str, Any]) -> ModelMetadata:
        """Metadata from its file's JSON object, as ``to_fields`` writes it."""
        raw = dict(raw)
        raw["classes"] = tuple(raw["classes"])
        raw["input_size"] = tuple(raw["input_size"])
        raw["preprocessing"] = preprocessing_of(raw)
        raw.pop("scale", None)
        return cls(**raw)

    def to_fields(self) -> dict[str, Any]:
        """The metadata file's JSON object."""
        return asdict(self) | {"preprocessing": self.preprocessing.to_fields()}

    def write_for(self, model_path: Path) -> Path:
        path = metadata_path_for(model_path)
        path.write_text(json.dumps(self.to_fields(), indent=2, ensure_ascii=False) + "\n")
        return path

    @property
    def format_name(self) -> str:
        return FORMAT_NAMES.get(self.format, self.format)

    @property
    def input_size_text(self) -> str:
        width, height = self.input_size
        return f"{width}x{height} pixels"


def preprocessing_of(fields: dict[str, Any]) -> Preprocessing:
    """The ``preprocessing`` object of metadata fields; a file of before it was
    declared gives only ``scale``, which the service's own preprocessing then uses."""
    try:
        if "preprocessing" in fields:
            return Preprocessing.from_fields(fields["preprocessing"])
        scale = fields.get("scale", PRESETS["ecosnap"].scale)
        return Preprocessing.from_fields({"preset": "ecosnap", "scale": scale})
    except PreprocessingError as exc:
        raise MetadataError(exc.code, exc.message) from exc


def check_classes(classes: tuple[str, ...] | list[str]) -> None:
    """A model's classes must be distinct names of the service's classes (any order)."""
    if not all(name in CLASSES for name in classes) or len(set(classes)) != len(classes):
        raise MetadataError(
            "invalid_metadata",
            f"classes must be distinct names from {', '.join(CLASSES)}; got {list(classes)}.",
        )


def check_version_name(version: Any) -> None:
    """A version names a folder and a URL path segment: short, plain, and not a route."""
    if (
        not isinstance(version, str)
        or not VERSION_PATTERN.match(version)
        or version in RESERVED_VERSIONS
    ):
        raise MetadataError(
            "invalid_version",
            "A version is 1 to 64 letters, digits, '.', '_', '+' or '-', starting with a "
            f"letter or digit, and not {' or '.join(sorted(RESERVED_VERSIONS))}.",
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
