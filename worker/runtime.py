"""Model runtimes: load a model file, ``predict(batch) -> probabilities``.

Everything else in the worker talks to a ``ModelRuntime`` and never to Keras
directly, so a model format is a matter of this module alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from common.model_metadata import ModelMetadata


class ModelRuntime(Protocol):
    metadata: ModelMetadata

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N, height, width, 3) float32 -> (N, classes) probabilities."""
        ...


class KerasRuntime:
    """A Keras ``.h5``/``.keras`` model called through one traced ``tf.function``.

    The function's batch dimension is ``None`` in its input signature, so it is
    traced once and every batch size reuses that graph: no retracing per size and
    none of ``model.predict``'s per-call set-up.
    """

    def __init__(self, path: Path, metadata: ModelMetadata) -> None:
        import keras
        import tensorflow as tf

        self.metadata = metadata
        self.model = keras.models.load_model(path, compile=False)
        width, height = metadata.input_size
        self._call = tf.function(
            lambda images: self.model(images, training=False),
            input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32)],
        )

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self._call(batch).numpy()

    @property
    def tracing_count(self) -> int:
        return self._call.experimental_get_tracing_count()


def load_runtime(path: Path) -> ModelRuntime:
    """Load ``path`` with the runtime its format needs, then warm it up."""
    metadata = ModelMetadata.for_model(path)
    runtime = KerasRuntime(path, metadata)
    width, height = metadata.input_size
    runtime.predict(np.zeros((1, height, width, 3), np.float32))
    return runtime
