"""Check an uploaded model version before it may be activated.

It must load in a worker (the same runtime that would serve it), declare the input
shape its metadata promises, output one probability per class of its metadata, and
classify the sample photos with finite probabilities that sum to one. A model that
fails any check is marked invalid with the reason; the active model is untouched.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from common.errors import Refusal
from common.jobs import WORKER_ERROR, JobStore, utc_now
from common.labels import CLASSES
from common.model_metadata import MetadataError, ModelMetadata, check_classes
from common.registry import ModelRegistry
from worker.conversion import sample_batch
from worker.runtime import ModelRuntime, load_runtime


class InvalidModel(Refusal):
    """A model version that fails validation; the message says which check and why."""

    def __init__(self, message: str) -> None:
        super().__init__("invalid_model", message)


def check_runtime(runtime: ModelRuntime) -> dict[str, Any]:
    """Shape and sample checks on a loaded runtime; returns what was measured."""
    metadata = runtime.metadata
    width, height = metadata.input_size
    declared = runtime.input_shape
    if len(declared) != 4 or declared[1:] != (height, width, 3):
        raise InvalidModel(
            f"The model takes input {declared}, but its metadata says "
            f"{width}x{height} RGB, i.e. (None, {height}, {width}, 3)."
        )
    batch = sample_batch(metadata)
    try:
        probabilities = runtime.predict(batch)
    except Exception as exc:  # whatever the framework raises on a model that cannot run
        raise InvalidModel(f"The model fails on the sample photos: {exc}") from exc
    if probabilities.shape != (len(batch), len(metadata.classes)):
        raise InvalidModel(
            f"The model outputs shape {probabilities.shape[1:]} per image, but its metadata "
            f"lists {len(metadata.classes)} classes."
        )
    sums = probabilities.sum(axis=1)
    if not np.isfinite(probabilities).all() or not np.allclose(sums, 1.0, atol=1e-3):
        raise InvalidModel(
            "The model's outputs on the sample photos are not probabilities "
            "(finite, summing to 1); if they are logits, say so in the metadata "
            '("outputs": "logits"), as `ecosnap models add` does.'
        )
    expected = np.repeat(np.arange(len(CLASSES)), len(batch) // len(CLASSES))
    predicted = [CLASSES.index(metadata.classes[i]) for i in probabilities.argmax(axis=1)]
    return {
        "input_shape": [height, width, 3],
        "classes": len(metadata.classes),
        "sample_images": len(batch),
        # Informative only: the samples are synthetic drawings, which a model of
        # real photos need not recognise.
        "sample_accuracy": round(float(np.mean(expected == predicted)) * 100, 1),
    }


def validate(registry: ModelRegistry, version: str) -> dict[str, Any]:
    """Load ``version`` as a worker would and check it; raises ``InvalidModel``."""
    path = registry.model_path(version)
    try:
        check_classes(ModelMetadata.for_model(path).classes)
    except MetadataError as exc:
        raise InvalidModel(f"The metadata's {exc.message}") from exc
    try:
        runtime = load_runtime(path, warm_up=False)
    except Exception as exc:  # any framework's load or first-call error means "broken"
        raise InvalidModel(f"The model does not load: {type(exc).__name__}: {exc}") from exc
    return check_runtime(runtime)


def run(job_id: str, version: str, registry: ModelRegistry, jobs: JobStore) -> None:
    """Validate an uploaded version: the registry and the job both get the outcome.

    Only a job still queued (or running, when its message came back after a worker
    died) is validated: a finished one keeps its outcome and the registry its state.
    """
    if not jobs.transition(job_id, ("queued", "running"), status="running", started_at=utc_now()):
        return
    jobs.in_hand("validate_model", job_id)
    try:
        checks = validate(registry, version)
        registry.set_status(version, "valid", checks=checks, validated_at=utc_now())
    except Exception as exc:
        invalid = isinstance(exc, InvalidModel)
        error = exc.as_error() if invalid else WORKER_ERROR
        # The registry first, so a client that sees the job end sees the state too;
        # the job ends even if the registry cannot be written. Invalid either way:
        # POST /models/<version>/validate tries again.
        try:
            registry.set_status(version, "invalid", error=error)
        finally:
            jobs.fail(job_id, **error)
        if not invalid:
            raise
        return
    result = {"version": version, "valid": True, "checks": checks}
    jobs.transition(job_id, ("running",), status="succeeded", result=json.dumps(result),
                    finished_at=utc_now())  # fmt: skip
