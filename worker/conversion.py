"""Convert a Keras model to SavedModel, ONNX or TFLite, and prove the copy answers alike.

Used by ``ecosnap export`` and by the worker's accelerated path (serving a Keras
model through ONNX Runtime). Every conversion is loaded back through the worker's
own runtime and compared with the source on sample images: same top label and
probabilities within ``PARITY_ATOL``. A conversion that changes answers is refused.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np

from common.labels import CLASSES
from common.model_metadata import ModelMetadata, file_sha256
from common.preprocessing import preprocess
from training.synthetic import draw_photo, jpeg_bytes
from worker.runtime import KerasRuntime, ModelRuntime, OnnxRuntime, load_runtime

log = logging.getLogger(__name__)

PARITY_ATOL = 1e-4
EXPORT_SUFFIXES = {"savedmodel": "", "onnx": ".onnx", "tflite": ".tflite"}


class ParityError(ValueError):
    """A converted model whose answers differ from its source's."""


def sample_batch(metadata: ModelMetadata, per_class: int = 2, seed: int = 123) -> np.ndarray:
    """Preprocessed synthetic photos of every class, for parity checks."""
    rng = np.random.default_rng(seed)
    return np.stack(
        [
            preprocess(jpeg_bytes(draw_photo(label, rng)), metadata.input_size, metadata.scale)
            for label in CLASSES
            for _ in range(per_class)
        ]
    )


def check_parity(source: ModelRuntime, converted: ModelRuntime, batch: np.ndarray) -> float:
    """The largest probability difference; raises ``ParityError`` past the tolerance."""
    expected, actual = source.predict(batch), converted.predict(batch)
    if expected.shape != actual.shape:
        raise ParityError(f"Output shape {actual.shape} differs from {expected.shape}.")
    if not np.array_equal(expected.argmax(axis=1), actual.argmax(axis=1)):
        raise ParityError("The converted model's top labels differ from the source's.")
    difference = float(np.abs(expected - actual).max())
    if difference > PARITY_ATOL:
        raise ParityError(f"Probabilities differ by {difference:.2e} (> {PARITY_ATOL:g}).")
    return difference


def write_converted(model, target: str, path: Path) -> None:
    """Write a Keras model in ``target`` format at ``path``."""
    if target == "tflite":
        import tensorflow as tf

        with tempfile.TemporaryDirectory() as saved_model:
            model.export(saved_model, format="tf_saved_model", verbose=False)
            path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(saved_model).convert())
    else:
        model.export(
            str(path), format={"savedmodel": "tf_saved_model"}.get(target, target), verbose=False
        )


def default_output(model_path: Path, target: str) -> Path:
    return model_path.with_name(f"{model_path.stem}_{target}{EXPORT_SUFFIXES[target]}")


def export(model_path: Path, target: str, output: Path | None = None) -> tuple[Path, float]:
    """Export a Keras model; returns the written path and the parity difference."""
    if target not in EXPORT_SUFFIXES:
        raise ValueError(f"Unknown format {target!r}; use one of {', '.join(EXPORT_SUFFIXES)}.")
    output = output or default_output(model_path, target)
    source = load_runtime(model_path)
    if not isinstance(source, KerasRuntime):
        raise ValueError(f"{model_path.name} is not a Keras model (.h5 or .keras).")
    with tempfile.TemporaryDirectory(dir=output.parent) as workdir:
        candidate = Path(workdir) / output.name
        write_converted(source.model, target, candidate)
        metadata = replace(
            source.metadata, format=target, file=output.name, sha256=file_sha256(candidate)
        )
        metadata.write_for(candidate)
        difference = check_parity(source, load_runtime(candidate), sample_batch(source.metadata))
        if output.is_dir():
            shutil.rmtree(output)
        candidate.rename(output)
        metadata.write_for(output)
    return output, difference


def accelerate(runtime: ModelRuntime, cache_dir: Path) -> ModelRuntime:
    """Serve a Keras model through ONNX Runtime when the conversion answers alike.

    On this project's benchmark ONNX Runtime runs the demo CNN about twice as fast
    as TensorFlow on a 2-core CPU. The ONNX file is cached by the source's sha256;
    any failure keeps the Keras runtime, which is always correct.
    """
    if not isinstance(runtime, KerasRuntime):
        return runtime
    cache_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = cache_dir / f"{runtime.metadata.sha256}.onnx"
    try:
        if not onnx_path.exists():
            partial = onnx_path.with_suffix(f".{uuid.uuid4().hex}.part.onnx")
            write_converted(runtime.model, "onnx", partial)
            partial.replace(onnx_path)
        candidate = OnnxRuntime(onnx_path, runtime.metadata)
        check_parity(runtime, candidate, sample_batch(runtime.metadata))
    except Exception:  # any conversion failure falls back to Keras, always correct
        log.exception("ONNX acceleration failed; serving with Keras")
        return runtime
    return candidate
