"""Model runtimes: load a model file, ``predict(batch) -> probabilities``.

Everything else in the worker talks to a ``ModelRuntime`` and never to a framework,
so serving another format is a matter of this module alone. The runtime is picked
from the file: ``.h5``/``.keras`` (Keras), a directory (TensorFlow SavedModel),
``.onnx`` (ONNX Runtime) or ``.tflite`` (LiteRT).

A model whose metadata says it outputs logits gets a softmax. A model file whose
batch dimension is fixed (a ``.tflite`` from ``TFLiteConverter``, many ONNX exports)
is still served in batches where its runtime can resize the input (``batching``:
``resized``), else one image at a time (``one at a time``); ``GET /models`` shows
which, per worker.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Protocol

import numpy as np

from common.model_metadata import ModelMetadata, model_format
from worker.devices import Device


class ModelRuntime(Protocol):
    metadata: ModelMetadata
    # The input shape the model file itself declares; None for a free dimension.
    input_shape: tuple[int | None, ...]
    # How batches reach the model: "dynamic", "resized" or "one at a time".
    batching: str

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N, height, width, 3) float32 -> (N, classes) probabilities."""
        ...


CPU = Device("cpu", reason="the default")


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class Runtime:
    """What every runtime shares: its metadata, how it batches, and the softmax of a
    model that outputs logits. Each framework's class runs the model (``_run``)."""

    metadata: ModelMetadata
    input_shape: tuple[int | None, ...]
    batching = "dynamic"

    def _run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, batch: np.ndarray) -> np.ndarray:
        outputs = np.asarray(self._run(batch), dtype=np.float32)
        return softmax(outputs) if self.metadata.outputs == "logits" else outputs


def _dimensions(shape) -> tuple[int | None, ...]:
    """A shape as ints and ``None``: frameworks spell a free dimension -1, "batch" or None."""
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)


def _input_spec(metadata: ModelMetadata):
    import tensorflow as tf

    width, height = metadata.input_size
    return tf.TensorSpec([None, height, width, 3], tf.float32)


class KerasRuntime(Runtime):
    """A Keras ``.h5``/``.keras`` model (Keras 2 ``.h5`` files too) called through one
    traced ``tf.function``.

    The function's batch dimension is ``None`` in its input signature, so it is
    traced once and every batch size reuses that graph: no retracing per size and
    none of ``model.predict``'s per-call set-up.
    """

    def __init__(self, path: Path, metadata: ModelMetadata, device: Device = CPU) -> None:
        import tensorflow as tf

        from worker.devices import prepare_tensorflow
        from worker.legacy_keras import load_keras_model

        prepare_tensorflow(device)
        self.metadata = metadata
        self.model = load_keras_model(path)
        self.input_shape = _dimensions(self.model.input_shape)
        self._call = tf.function(
            lambda images: self.model(images, training=False),
            input_signature=[_input_spec(metadata)],
        )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self._call(batch).numpy()

    @property
    def tracing_count(self) -> int:
        return self._call.experimental_get_tracing_count()


class SavedModelRuntime(Runtime):
    """A TensorFlow SavedModel directory, through its ``serving_default`` signature."""

    def __init__(self, path: Path, metadata: ModelMetadata, device: Device = CPU) -> None:
        import tensorflow as tf

        self.metadata = metadata
        self._loaded = tf.saved_model.load(str(path))
        signature = self._loaded.signatures["serving_default"]
        self._input_name = next(iter(signature.structured_input_signature[1]))
        self._signature = signature
        self.input_shape = _dimensions(
            signature.structured_input_signature[1][self._input_name].shape.as_list()
        )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        outputs = self._signature(**{self._input_name: batch})
        return next(iter(outputs.values())).numpy()


def _one_at_a_time(run, batch: np.ndarray) -> np.ndarray:
    return np.concatenate([run(batch[i : i + 1]) for i in range(len(batch))])


class OnnxRuntime(Runtime):
    """An ONNX model in ONNX Runtime's CPU provider, one thread per core.

    A file whose batch dimension is fixed is loaded with that dimension made free
    when the graph then runs a batch of two (``resized``); one that does not runs
    one image at a time.
    """

    def __init__(self, path: Path, metadata: ModelMetadata, device: Device = CPU) -> None:
        self.metadata = metadata
        self._providers = device.onnx_providers()
        self._session = _onnx_session(str(path), self._providers)
        self.input_shape = _dimensions(self._session.get_inputs()[0].shape)
        self._input_name = self._session.get_inputs()[0].name
        if self.input_shape[0] is not None:
            self._session, self.batching = self._with_free_batch(path)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        def run(images: np.ndarray) -> np.ndarray:
            return self._session.run(None, {self._input_name: images})[0]

        return _one_at_a_time(run, batch) if self.batching == "one at a time" else run(batch)

    def _with_free_batch(self, path: Path):
        """The session with a free batch dimension, "resized"; or as it was, "one at
        a time"."""
        import onnx

        model = onnx.load(str(path))
        for value in (model.graph.input[0], *model.graph.output):
            value.type.tensor_type.shape.dim[0].dim_param = "batch"
        width, height = self.metadata.input_size
        try:
            resized = _onnx_session(model.SerializeToString(), self._providers)
            name = resized.get_inputs()[0].name
            outputs = resized.run(None, {name: np.zeros((2, height, width, 3), np.float32)})[0]
            if outputs.shape[0] == 2:
                return resized, "resized"
        except Exception:  # whatever ONNX Runtime says of a graph tied to its batch size
            pass
        return self._session, "one at a time"


def _onnx_session(model: str | bytes, providers: list):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    # Idle threads would otherwise spin between batches, taking the cores that
    # decoding, Celery and the API need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(model, options, providers=providers)


class TFLiteRuntime(Runtime):
    """A TFLite model in LiteRT's interpreter; the input is resized per batch size.

    A fixed batch dimension is resized too, when the interpreter then runs a batch of
    two (``resized``); otherwise the model takes one image at a time. Integer inputs
    and outputs (a fully quantized model) are quantized and dequantized with the
    model's own parameters.
    """

    def __init__(self, path: Path, metadata: ModelMetadata, device: Device = CPU) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.metadata = metadata
        self._interpreter = Interpreter(str(path), num_threads=os.cpu_count() or 1)
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self.input_shape = _dimensions(self._input["shape_signature"].tolist())
        self._batch_size = 0
        if self.input_shape[0] is not None:
            width, height = metadata.input_size
            try:
                self._invoke(np.zeros((2, height, width, 3), np.float32))
                self.batching = "resized"
            except (RuntimeError, ValueError):
                self.batching = "one at a time"

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) != self._batch_size:
            self._interpreter.resize_tensor_input(self._input["index"], batch.shape)
            self._interpreter.allocate_tensors()
            self._batch_size = len(batch)
        self._interpreter.set_tensor(self._input["index"], _quantized(batch, self._input))
        self._interpreter.invoke()
        return _dequantized(self._interpreter.get_tensor(self._output["index"]), self._output)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.batching == "one at a time":
            return _one_at_a_time(self._invoke, batch)
        return self._invoke(batch)


def _quantized(values: np.ndarray, details: dict) -> np.ndarray:
    dtype = details["dtype"]
    if np.issubdtype(dtype, np.floating):
        return values.astype(dtype, copy=False)
    scale, zero_point = details["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(values / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantized(values: np.ndarray, details: dict) -> np.ndarray:
    if np.issubdtype(values.dtype, np.floating):
        return values.copy()
    scale, zero_point = details["quantization"]
    return (values.astype(np.float32) - zero_point) * scale


KERAS_FORMATS = frozenset({"h5", "keras"})
RUNTIMES: dict[str, type] = {
    "h5": KerasRuntime,
    "keras": KerasRuntime,
    "savedmodel": SavedModelRuntime,
    "onnx": OnnxRuntime,
    "tflite": TFLiteRuntime,
}


def load_runtime(path: Path, warm_up: bool = True, device: Device = CPU) -> ModelRuntime:
    """Load ``path`` with the runtime its format needs, on ``device`` (LiteRT: always
    the CPU), and (by default) warm it up."""
    runtime = RUNTIMES[model_format(path)](path, ModelMetadata.for_model(path), device)
    runtime = on_device(runtime, device)
    return warmed(runtime) if warm_up else runtime


def on_device(runtime: ModelRuntime, device: Device) -> ModelRuntime:
    """The runtime as ``device`` runs it: a simulated accelerator stands in for it."""
    return SimulatedAccelerator(runtime, device) if device.kind == "simulated" else runtime


class SimulatedAccelerator(Runtime):
    """The scaling benchmark's stand-in for a GPU: each model call sleeps a fixed time
    per batch plus a small time per image and answers the first class (the model's
    input is still made, and the model itself is loaded but not called)."""

    def __init__(self, runtime: ModelRuntime, device: Device) -> None:
        self.metadata, self.input_shape = runtime.metadata, runtime.input_shape
        self._seconds = (device.batch_ms / 1000, device.image_ms / 1000)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        per_batch, per_image = self._seconds
        time.sleep(per_batch + per_image * len(batch))
        probabilities = np.zeros((len(batch), len(self.metadata.classes)), np.float32)
        probabilities[:, 0] = 1.0
        return probabilities


def warmed(runtime: ModelRuntime) -> ModelRuntime:
    """The runtime after one call: its first, slowest call is not a client's."""
    width, height = runtime.metadata.input_size
    runtime.predict(np.zeros((1, height, width, 3), np.float32))
    return runtime
