"""Answer a batch of photos: read, preprocess, one model call, describe, record.

Plain functions, so the Celery task stays a thin wrapper and tests can call them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np

from common.batch_stats import count_batch
from common.errors import Refusal
from common.jobs import WORKER_ERROR, JobStore
from common.labels import suggestion
from common.messages import MalformedMessage, Predict
from common.model_metadata import ModelMetadata
from common.preprocessing import preprocess
from common.reports import percent
from common.storage import Storage, StorageError
from worker.runtime import ModelRuntime

TOP_K = 3
_DECODERS = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="decode")

# A received predict message: its job id (the task id), positional and keyword arguments.
Delivery = tuple[str, Sequence[Any], dict[str, Any]]


def describe(
    probabilities: np.ndarray, job_id: str, photo: Predict, runtime: ModelRuntime
) -> dict[str, Any]:
    """The seed's answer for one image, plus the top labels and the model version."""
    classes = runtime.metadata.classes
    order = np.argsort(probabilities)[::-1][:TOP_K]
    label = classes[order[0]]
    return {
        "job_id": job_id,
        "label": label,
        "confidence": percent(probabilities[order[0]]),
        "suggestion": suggestion(label, photo.lang),
        "image_url": photo.image_url,
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
        except Refusal as exc:  # the image, or a dataset's member, is unreadable
            return exc.as_error()
        except StorageError as exc:
            return {"code": "image_not_found", "message": str(exc)}

    return _DECODERS.map(prepare, readers)


def classify(
    photos: dict[str, Predict], runtime: ModelRuntime, storage: Storage, max_pixels: int
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, str]]]:
    """Results and errors by job id; a bad image fails only its own job."""
    readers = [partial(storage.read, photo.image_key) for photo in photos.values()]
    prepared = dict(zip(photos, prepare_each(readers, runtime.metadata, max_pixels), strict=True))
    ready = {job_id: array for job_id, array in prepared.items() if isinstance(array, np.ndarray)}
    errors = {job_id: error for job_id, error in prepared.items() if isinstance(error, dict)}
    results = {}
    if ready:
        probabilities = runtime.predict(np.stack(list(ready.values())))
        results = {
            job_id: describe(row, job_id, photos[job_id], runtime)
            for job_id, row in zip(ready, probabilities, strict=True)
        }
    return results, errors


def answer_batch(
    deliveries: list[Delivery],
    runtime: ModelRuntime,
    storage: Storage,
    jobs: JobStore,
    max_pixels: int,
) -> None:
    """Classify a batch of received photos and record every job's outcome.

    Every job of the batch ends, whatever happens: a malformed message fails its
    own job; a failure of the job store, the storage or the model fails them all
    with ``worker_error`` (so no waiting client waits out its timeout), and then
    propagates for Celery to log.
    """
    photos: dict[str, Predict] = {}
    refused: dict[str, dict[str, str]] = {}
    try:
        for job_id, args, kwargs in deliveries:
            try:
                photos[job_id] = Predict.received(args, kwargs)
            except MalformedMessage as exc:
                refused[job_id] = exc.as_error()
        jobs.mark_running(list(photos))
        results, errors = classify(photos, runtime, storage, max_pixels) if photos else ({}, {})
    except Exception:
        jobs.finish({}, {job_id: WORKER_ERROR for job_id, _, _ in deliveries})
        raise
    jobs.finish(results, errors | refused)
    count_batch(jobs.redis, len(deliveries))
