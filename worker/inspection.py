"""Metadata for a model trained elsewhere, read off the model file itself.

A notebook's ``.h5``, ``.keras``, ``.onnx`` or ``.tflite`` comes without the service's
metadata file. Most of it is in the file: the input size (and whether the batch
dimension is fixed), how many outputs there are per image, and whether they are
already probabilities (a softmax) or logits (then the service applies one). What
cannot be read is asked for: the class order (the service's own by default) and how
the model was fed in training (a preprocessing preset). ``ecosnap models add`` calls
this; the result is validated like any upload before it can serve.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from common.errors import Refusal
from common.model_metadata import ModelMetadata, file_sha256, model_format
from common.preprocessing import PRESETS
from worker.conversion import sample_batch
from worker.runtime import RUNTIMES, Runtime


class InspectionError(Refusal):
    """A model file the service cannot serve as it is, with the reason."""

    def __init__(self, message: str) -> None:
        super().__init__("invalid_model", message)


def describe_model(
    path: Path, version: str, description: str, preset: str, classes: tuple[str, ...]
) -> ModelMetadata:
    """The metadata of the model at ``path``, its input and outputs read off the file."""
    file_format = model_format(path)
    metadata = ModelMetadata(
        version=version, description=description, file=path.name, sha256=file_sha256(path),
        format=file_format, classes=classes, preprocessing=PRESETS[preset],
    )  # fmt: skip
    shape = _load(path, metadata).input_shape
    if len(shape) != 4 or shape[3] != 3 or None in shape[1:3]:
        raise InspectionError(
            f"{path.name} takes input of shape {shape}; the service feeds images as "
            "(batch, height, width, 3), channels last."
        )
    metadata = replace(metadata, input_size=(shape[2], shape[1]))
    runtime = _load(path, metadata)
    outputs = np.asarray(runtime._run(sample_batch(metadata)), dtype=np.float64)
    if outputs.ndim != 2 or outputs.shape[1] != len(classes):
        raise InspectionError(
            f"{path.name} outputs shape {outputs.shape[1:]} per image; --classes names "
            f"{len(classes)} classes."
        )
    probabilities = (outputs >= 0).all() and np.allclose(outputs.sum(axis=1), 1.0, atol=1e-3)
    return replace(
        metadata,
        outputs="probabilities" if probabilities else "logits",
        extra={"imported": {"input_shape": list(shape), "batching": runtime.batching,
                            "preset": preset}},
    )  # fmt: skip


def _load(path: Path, metadata: ModelMetadata) -> Runtime:
    try:
        return RUNTIMES[metadata.format](path, metadata)
    except Exception as exc:  # whatever the framework says of a file it cannot load
        raise InspectionError(f"{path.name} does not load: {type(exc).__name__}: {exc}") from exc
