"""Convert a Keras model to SavedModel, ONNX or TFLite, and prove the copy answers alike.

Used by ``ecosnap export`` and by the worker's accelerated path (serving a Keras
model through ONNX Runtime). Every conversion is loaded back through the worker's
own runtime and compared with the source on sample images: same top label and
probabilities within ``PARITY_ATOL``. A conversion that changes answers is refused.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
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
# A conversion that hangs must not keep a worker from serving (it falls back to Keras).
CONVERSION_TIMEOUT_S = 900
EXPORT_SUFFIXES = {"savedmodel": "", "onnx": ".onnx", "tflite": ".tflite"}


class ParityError(ValueError):
    """A converted model whose answers differ from its source's."""


def sample_batch(metadata: ModelMetadata, per_class: int = 2, seed: int = 123) -> np.ndarray:
    """Preprocessed synthetic photos of every class, for parity checks."""
    rng = np.random.default_rng(seed)
    return np.stack(
        [
            preprocess(
                jpeg_bytes(draw_photo(label, rng)), metadata.input_size, metadata.preprocessing
            )
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

    ONNX Runtime runs the demo CNN faster than TensorFlow on a CPU (the README's
    model formats section has the measurement). The ONNX file is cached by the
    source's sha256 and enters the cache only once it has passed the parity check,
    so a cached file is served as it is. Any failure keeps the Keras runtime, which
    is always correct.
    """
    if not isinstance(runtime, KerasRuntime):
        return runtime
    onnx_path = cached_onnx(cache_dir, runtime.metadata.sha256)
    try:
        if not onnx_path.exists():
            cache_dir.mkdir(parents=True, exist_ok=True)
            partial = onnx_path.with_suffix(f".{uuid.uuid4().hex}.part.onnx")
            try:
                write_converted(runtime.model, "onnx", partial)
                candidate = OnnxRuntime(partial, runtime.metadata)
                check_parity(runtime, candidate, sample_batch(runtime.metadata))
                partial.replace(onnx_path)
            finally:
                partial.unlink(missing_ok=True)
        return OnnxRuntime(onnx_path, runtime.metadata)
    except Exception:  # any conversion failure falls back to Keras, always correct
        log.exception("ONNX acceleration failed; serving with Keras")
        return runtime


def cached_onnx(cache_dir: Path, sha256: str) -> Path:
    """Where the checked ONNX copy of the Keras model with this sha256 is kept."""
    return cache_dir / f"{sha256}.onnx"


def accelerated_copy(model_path: Path, sha256: str, cache_dir: Path) -> Path | None:
    """The checked ONNX copy of a Keras model, converted in a child process if need be.

    The conversion needs TensorFlow (hundreds of megabytes once imported, never
    given back); in a child process it leaves this process without it, so a worker
    serving the copy never holds TensorFlow. ``None`` if it did not convert alike.
    """
    onnx_path = cached_onnx(cache_dir, sha256)
    if not onnx_path.exists():
        command = [sys.executable, "-m", "worker.conversion", str(model_path), str(cache_dir)]
        try:
            done = subprocess.run(command, capture_output=True, text=True,
                                  timeout=CONVERSION_TIMEOUT_S, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            log.warning("ONNX conversion of %s took over %d s; serving with Keras",
                        model_path, CONVERSION_TIMEOUT_S)  # fmt: skip
            return None
        if done.returncode:
            log.warning("ONNX conversion of %s failed:\n%s", model_path, done.stderr[-4000:])
    return onnx_path if onnx_path.exists() else None


if __name__ == "__main__":  # python -m worker.conversion MODEL CACHE_DIR (accelerated_copy)
    logging.basicConfig(level=logging.INFO)
    model, cache = Path(sys.argv[1]), Path(sys.argv[2])
    served = accelerate(load_runtime(model), cache)
    sys.exit(0 if isinstance(served, OnnxRuntime) else 1)
