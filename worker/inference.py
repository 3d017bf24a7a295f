"""Classify a batch of predict jobs: read, preprocess, one model call, describe.

Plain functions, so the Celery task stays a thin wrapper and tests can call them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from common.labels import suggestion
from common.preprocessing import ImageRejected, preprocess
from common.storage import Storage, StorageError
from worker.runtime import ModelRuntime

TOP_K = 3


@dataclass(frozen=True)
class PredictJob:
    """What the API enqueues for one photo."""

    job_id: str
    image_key: str
    image_url: str
    lang: str


def percent(probability: float) -> float:
    return round(float(probability) * 100, 1)


def describe(probabilities: np.ndarray, job: PredictJob, runtime: ModelRuntime) -> dict[str, Any]:
    """The seed's answer for one image, plus the top labels and the model version."""
    classes = runtime.metadata.classes
    order = np.argsort(probabilities)[::-1][:TOP_K]
    label = classes[order[0]]
    return {
        "job_id": job.job_id,
        "label": label,
        "confidence": percent(probabilities[order[0]]),
        "suggestion": suggestion(label, job.lang),
        "image_url": job.image_url,
        "model_version": runtime.metadata.version,
        "top_k": [
            {"label": classes[index], "confidence": percent(probabilities[index])}
            for index in order
        ],
    }


def classify(
    jobs: list[PredictJob], runtime: ModelRuntime, storage: Storage, max_pixels: int
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, str]]]:
    """Results and errors by job id; a bad image fails only its own job."""
    metadata = runtime.metadata
    arrays, ready, errors = [], [], {}
    for job in jobs:
        try:
            data = storage.read(job.image_key)
            arrays.append(preprocess(data, metadata.input_size, metadata.scale, max_pixels))
            ready.append(job)
        except ImageRejected as exc:
            errors[job.job_id] = {"code": exc.code, "message": exc.message}
        except StorageError as exc:
            errors[job.job_id] = {"code": "image_not_found", "message": str(exc)}
    results = {}
    if arrays:
        probabilities = runtime.predict(np.stack(arrays))
        results = {
            job.job_id: describe(row, job, runtime)
            for job, row in zip(ready, probabilities, strict=True)
        }
    return results, errors
