"""What both peers share: the ONNX model in one session and the service's preprocessing.

The benchmark passes the model through environment variables: ``PEER_ONNX`` (the
ONNX file the EcoSnap worker serves, from its conversion cache) and ``PEER_MODEL``
(the source model, whose metadata file gives input size, scaling and class order).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime

from common.model_metadata import ModelMetadata
from common.preprocessing import preprocess


class PeerModel:
    """One ONNX Runtime session with ``PEER_ONNX_THREADS`` threads (default 1)."""

    def __init__(self) -> None:
        self.metadata = ModelMetadata.for_model(Path(os.environ["PEER_MODEL"]))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("PEER_ONNX_THREADS", "1"))
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(
            os.environ["PEER_ONNX"], options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def prepare(self, data: bytes) -> np.ndarray:
        return preprocess(data, self.metadata.input_size, self.metadata.preprocessing)

    def answer(self, batch: np.ndarray) -> list[dict]:
        probabilities = self.session.run(None, {self.input_name: batch})[0]
        return [
            {"label": self.metadata.classes[int(row.argmax())], "confidence": float(row.max())}
            for row in probabilities
        ]
