"""Classify a batch of predict jobs: read, preprocess, one model call, describe.

Plain functions, so the Celery task stays a thin wrapper and tests can call them.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.labels import suggestion
from common.model_metadata import ModelMetadata
from common.preprocessing import ImageRejected, preprocess
from common.storage import Storage, StorageError
from worker.runtime import ModelRuntime

TOP_K = 3
_DECODERS = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="decode")


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


def _prepare(
    job: PredictJob, storage: Storage, metadata: ModelMetadata, max_pixels: int
) -> np.ndarray | dict[str, str]:
    """The model input for one job, or the error that fails it."""
    try:
        data = storage.read(job.image_key)
        return preprocess(data, metadata.input_size, metadata.scale, max_pixels)
    except ImageRejected as exc:
        return {"code": exc.code, "message": exc.message}
    except StorageError as exc:
        return {"code": "image_not_found", "message": str(exc)}


def classify(
    jobs: list[PredictJob], runtime: ModelRuntime, storage: Storage, max_pixels: int
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, str]]]:
    """Results and errors by job id; a bad image fails only its own job.

    Images are read and decoded on a thread per core (Pillow releases the GIL while
    decoding and resizing), then classified in one model call.
    """
    prepared = list(
        _DECODERS.map(lambda job: _prepare(job, storage, runtime.metadata, max_pixels), jobs)
    )
    ready = [
        (job, array)
        for job, array in zip(jobs, prepared, strict=True)
        if isinstance(array, np.ndarray)
    ]
    errors = {
        job.job_id: error
        for job, error in zip(jobs, prepared, strict=True)
        if isinstance(error, dict)
    }
    results = {}
    if ready:
        probabilities = runtime.predict(np.stack([array for _, array in ready]))
        results = {
            job.job_id: describe(row, job, runtime)
            for (job, _), row in zip(ready, probabilities, strict=True)
        }
    return results, errors
