"""The BentoML peer: one service with adaptive batching over the same ONNX session.

Runs in its own virtual environment (``make bench-peers``), never in the service's.
BentoML gathers concurrent calls of ``predict`` into one list, up to
``max_batch_size`` images, waiting at most ``max_latency_ms`` for a batch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import bentoml
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project's common/

from bench.peers.model import PeerModel


@bentoml.service(workers=1)
class Classifier:
    def __init__(self) -> None:
        self.model = PeerModel()

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=10_000)
    def predict(self, file: list[Path]) -> list[dict]:
        return self.model.answer(np.stack([self.model.prepare(p.read_bytes()) for p in file]))
