"""Classify a batch of predict jobs: read, preprocess, one model call, describe.

Plain functions, so the Celery task stays a thin wrapper and tests can call them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from common.labels import suggestion
from common.model_metadata import ModelMetadata
from common.preprocessing import ImageRejected, preprocess
from common.reports import percent
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


def prepare_each(
    readers: list[Callable[[], bytes]], metadata: ModelMetadata, max_pixels: int
) -> Iterator[np.ndarray | dict[str, str]]:
    """Model inputs, or the error for each image, in order, decoded on a thread per core.

    Pillow releases the GIL while decoding and resizing, so the threads use every
    core. All images are submitted at once and the iterator yields each as soon as it
    is ready, so a caller can run the model on the first ones while the rest decode.
    Prediction jobs and evaluation chunks both come through here.
    """

    def prepare(read: Callable[[], bytes]) -> np.ndarray | dict[str, str]:
        try:
            return preprocess(read(), metadata.input_size, metadata.scale, max_pixels)
        except ImageRejected as exc:
            return {"code": exc.code, "message": exc.message}
        except StorageError as exc:
            return {"code": "image_not_found", "message": str(exc)}

    return _DECODERS.map(prepare, readers)


def classify(
    jobs: list[PredictJob], runtime: ModelRuntime, storage: Storage, max_pixels: int
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, str]]]:
    """Results and errors by job id; a bad image fails only its own job."""
    prepared = list(
        prepare_each(
            [partial(storage.read, job.image_key) for job in jobs], runtime.metadata, max_pixels
        )
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
