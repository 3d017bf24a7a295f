"""Model runtimes: load a model file, ``predict(batch) -> probabilities``.

Everything else in the worker talks to a ``ModelRuntime`` and never to a framework,
so serving another format is a matter of this module alone. The runtime is picked
from the file: ``.h5``/``.keras`` (Keras), a directory (TensorFlow SavedModel),
``.onnx`` (ONNX Runtime) or ``.tflite`` (LiteRT).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from common.model_metadata import ModelMetadata, model_format


class ModelRuntime(Protocol):
    metadata: ModelMetadata
    # The input shape the model file itself declares; None for a free dimension.
    input_shape: tuple[int | None, ...]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N, height, width, 3) float32 -> (N, classes) probabilities."""
        ...


def _dimensions(shape) -> tuple[int | None, ...]:
    """A shape as ints and ``None``: frameworks spell a free dimension -1, "batch" or None."""
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)


def _input_spec(metadata: ModelMetadata):
    import tensorflow as tf

    width, height = metadata.input_size
    return tf.TensorSpec([None, height, width, 3], tf.float32)


class KerasRuntime:
    """A Keras ``.h5``/``.keras`` model (Keras 2 ``.h5`` files too) called through one
    traced ``tf.function``.

    The function's batch dimension is ``None`` in its input signature, so it is
    traced once and every batch size reuses that graph: no retracing per size and
    none of ``model.predict``'s per-call set-up.
    """

    def __init__(self, path: Path, metadata: ModelMetadata) -> None:
        import tensorflow as tf

        from worker.legacy_keras import load_keras_model

        self.metadata = metadata
        self.model = load_keras_model(path)
        self.input_shape = _dimensions(self.model.input_shape)
        self._call = tf.function(
            lambda images: self.model(images, training=False),
            input_signature=[_input_spec(metadata)],
        )

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self._call(batch).numpy()

    @property
    def tracing_count(self) -> int:
        return self._call.experimental_get_tracing_count()


class SavedModelRuntime:
    """A TensorFlow SavedModel directory, through its ``serving_default`` signature."""

    def __init__(self, path: Path, metadata: ModelMetadata) -> None:
        import tensorflow as tf

        self.metadata = metadata
        self._loaded = tf.saved_model.load(str(path))
        signature = self._loaded.signatures["serving_default"]
        self._input_name = next(iter(signature.structured_input_signature[1]))
        self._signature = signature
        self.input_shape = _dimensions(
            signature.structured_input_signature[1][self._input_name].shape.as_list()
        )

    def predict(self, batch: np.ndarray) -> np.ndarray:
        outputs = self._signature(**{self._input_name: batch})
        return next(iter(outputs.values())).numpy()


class OnnxRuntime:
    """An ONNX model in ONNX Runtime's CPU provider, one thread per core."""

    def __init__(self, path: Path, metadata: ModelMetadata) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = os.cpu_count() or 1
        # Idle threads would otherwise spin between batches, taking the cores that
        # decoding, Celery and the API need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.metadata = metadata
        self._session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self._input_name = self._session.get_inputs()[0].name
        self.input_shape = _dimensions(self._session.get_inputs()[0].shape)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input_name: batch})[0]


class TFLiteRuntime:
    """A TFLite model in LiteRT's interpreter; the input is resized per batch size."""

    def __init__(self, path: Path, metadata: ModelMetadata) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.metadata = metadata
        self._interpreter = Interpreter(str(path), num_threads=os.cpu_count() or 1)
        details = self._interpreter.get_input_details()[0]
        self._input = details["index"]
        self.input_shape = _dimensions(details["shape_signature"].tolist())
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._batch_size = 0

    def predict(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) != self._batch_size:
            self._interpreter.resize_tensor_input(self._input, batch.shape)
            self._interpreter.allocate_tensors()
            self._batch_size = len(batch)
        self._interpreter.set_tensor(self._input, batch)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output).copy()


KERAS_FORMATS = frozenset({"h5", "keras"})
RUNTIMES: dict[str, type] = {
    "h5": KerasRuntime,
    "keras": KerasRuntime,
    "savedmodel": SavedModelRuntime,
    "onnx": OnnxRuntime,
    "tflite": TFLiteRuntime,
}


def load_runtime(path: Path, warm_up: bool = True) -> ModelRuntime:
    """Load ``path`` with the runtime its format needs and (by default) warm it up."""
    runtime = RUNTIMES[model_format(path)](path, ModelMetadata.for_model(path))
    return warmed(runtime) if warm_up else runtime


def warmed(runtime: ModelRuntime) -> ModelRuntime:
    """The runtime after one call: its first, slowest call is not a client's."""
    width, height = runtime.metadata.input_size
    runtime.predict(np.zeros((1, height, width, 3), np.float32))
    return runtime
