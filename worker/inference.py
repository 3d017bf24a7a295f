"""Answer a batch of photos: read, preprocess, one model call, describe, record.

Plain functions, so the Celery task stays a thin wrapper and tests can call them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
from redis import RedisError

from common.batch_stats import count_batch
from common.errors import Refusal
from common.jobs import GAVE_UP, WORKER_ERROR, JobStore
from common.labels import CLASSES, suggestion
from common.messages import MalformedMessage, Photo, Predict
from common.model_metadata import ModelMetadata
from common.preprocessing import ImageLimits, preprocess
from common.reports import percent
from common.storage import STORAGE_UNAVAILABLE, Storage, StorageError, StorageUnavailable
from worker import metrics
from worker.runtime import ModelRuntime

TOP_K = 3
_DECODERS = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="decode")

# A received predict message: its positional and keyword arguments.
Delivery = tuple[Sequence[Any], dict[str, Any]]
log = logging.getLogger(__name__)


def describe(probabilities: np.ndarray, photo: Photo, runtime: ModelRuntime) -> dict[str, Any]:
    """The seed's answer for one image, plus the top labels and the model version."""
    classes = runtime.metadata.classes
    order = np.argsort(probabilities)[::-1][:TOP_K]
    label = classes[order[0]]
    return {
        "job_id": photo.job_id,
        "label": label,
        "confidence": percent(probabilities[order[0]]),
        "suggestion": suggestion(label, photo.lang),
        "image_url": photo.image_url,
        "model_version": runtime.metadata.version,
        "top_k": [
            {"label": classes[index], "confidence": percent(probabilities[index])}
            for index in order
        ],
        # Every class, unrounded, in the service's order.
        "probabilities": {
            name: float(probabilities[classes.index(name)]) for name in CLASSES if name in classes
        },
    }


def prepare_each(
    readers: list[Callable[[], bytes]], metadata: ModelMetadata, limits: ImageLimits
) -> Iterator[np.ndarray | dict[str, str]]:
    """Model inputs, or the error for each image, in order, decoded on a thread per core.

    Pillow releases the GIL while decoding and resizing, so the threads use every
    core. All images are submitted at once and the iterator yields each as soon as it
    is ready, so a caller can run the model on the first ones while the rest decode.
    Prediction jobs and evaluation chunks both come through here; ``limits`` bound
    each image and, with its budget, the memory all of them take at once.
    """

    def prepare(read: Callable[[], bytes]) -> np.ndarray | dict[str, str]:
        try:
            return preprocess(read(), metadata.input_size, metadata.preprocessing, limits)
        except Refusal as exc:  # the image, or a dataset's member, is unreadable
            return exc.as_error()
        except StorageError as exc:
            return {"code": "image_not_found", "message": str(exc)}
        except StorageUnavailable as exc:
            return {"code": STORAGE_UNAVAILABLE, "message": str(exc)}

    return _DECODERS.map(prepare, readers)


def classify(
    photos: list[Photo],
    runtime: ModelRuntime,
    storage: Storage,
    limits: ImageLimits,
    batch_size: int,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, str]]]:
    """Results and errors by job id; a bad image fails only its own job.

    The model sees at most ``batch_size`` images per call, however many photos the
    messages of one batch carried. Its sizes, timings, labels and confidences go to
    the worker's metrics and one log line.
    """
    started = time.perf_counter()
    readers = [partial(storage.read, photo.image_key) for photo in photos]
    prepared = list(prepare_each(readers, runtime.metadata, limits))
    inferring = time.perf_counter()
    ready = [(p, a) for p, a in zip(photos, prepared, strict=True) if isinstance(a, np.ndarray)]
    errors = {
        photo.job_id: error
        for photo, error in zip(photos, prepared, strict=True)
        if isinstance(error, dict)
    }
    results = {}
    for start in range(0, len(ready), batch_size):
        group = ready[start : start + batch_size]
        probabilities = runtime.predict(np.stack([array for _, array in group]))
        results |= {
            photo.job_id: describe(row, photo, runtime)
            for (photo, _), row in zip(group, probabilities, strict=True)
        }
    finished = time.perf_counter()
    observe_batch(photos, results, inferring - started, finished - inferring, runtime)
    return results, errors


def observe_batch(
    photos: list[Photo], results: dict[str, dict[str, Any]], prepare_s: float,
    inference_s: float, runtime: ModelRuntime,
) -> None:  # fmt: skip
    if not photos:
        return
    metrics.BATCH_SIZE.observe(len(photos))
    metrics.PREPARE_SECONDS.observe(prepare_s)
    metrics.INFERENCE_SECONDS.observe(inference_s)
    for result in results.values():
        metrics.PREDICTIONS.labels(result["label"]).inc()
        metrics.CONFIDENCE.observe(result["confidence"] / 100)
    log.info(
        "Classified %d photos", len(photos),
        extra={"batch_size": len(photos), "model_version": runtime.metadata.version,
               "jobs": [photo.job_id for photo in photos],
               "request_ids": sorted({photo.request_id for photo in photos}),
               "preprocess_ms": round(prepare_s * 1000, 2),
               "inference_ms": round(inference_s * 1000, 2)},
    )  # fmt: skip


def received_photos(
    deliveries: list[Delivery],
) -> tuple[list[Photo], dict[str, dict[str, str]]]:
    """The photos of a batch's messages, and the errors of those malformed.

    A malformed photo that names its job fails that job; a message too malformed to
    name any job can only be logged.
    """
    photos: list[Photo] = []
    refused: dict[str, dict[str, str]] = {}
    for args, kwargs in deliveries:
        try:
            items = Predict.received(args, kwargs).photos
        except MalformedMessage as exc:
            log.error("Dropped a message that names no job: %s", exc.message)
            continue
        for item in items:
            fields = item if isinstance(item, dict) else {}
            try:
                photos.append(Photo.received((), fields))
            except MalformedMessage as exc:
                job_id = fields.get("job_id")
                if isinstance(job_id, str):
                    refused[job_id] = exc.as_error()
                else:
                    log.error("Dropped a photo that names no job: %s", exc.message)
    return photos, refused


def answer_batch(
    deliveries: list[Delivery],
    runtime: ModelRuntime,
    storage: Storage,
    jobs: JobStore,
    limits: ImageLimits,
    batch_size: int,
) -> bool:
    """Classify the photos of a batch of messages and record every job's outcome;
    ``False`` if the job store did not answer, so the batch must go back to the queue.

    Every job of the batch ends once, whatever happens: a malformed photo fails its
    own job; a failure of the storage or the model fails them all with
    ``worker_error`` (so no waiting client waits out its timeout), and then
    propagates for Celery to log. A photo whose job has already finished (its
    message delivered again) is dropped, never run or answered a second time. When
    Redis does not answer (after the client's bounded retries) nothing can be
    recorded: the jobs stay queued or running, and their messages, put back, run
    them again once it does.
    """
    photos, refused = received_photos(deliveries)
    replies = {photo.job_id: photo.reply_to for photo in photos if photo.reply_to}
    try:
        runnable, exhausted = jobs.mark_running([photo.job_id for photo in photos])
        refused |= dict.fromkeys(exhausted, GAVE_UP)
        may_run = set(runnable)  # a photo twice in the batch (a copy sent again) runs once
        photos = list({photo.job_id: photo for photo in photos
                       if photo.job_id in may_run}.values())  # fmt: skip
        try:
            results, errors = classify(photos, runtime, storage, limits, batch_size)
        except Exception:
            failed = dict.fromkeys([photo.job_id for photo in photos], WORKER_ERROR)
            jobs.finish({}, failed | refused, replies)
            raise
        jobs.finish(results, errors | refused, replies)
        count_batch(jobs.redis, len(photos) + len(refused))
        metrics.JOBS_FINISHED.labels("predict", "succeeded").inc(len(results))
        metrics.JOBS_FINISHED.labels("predict", "failed").inc(len(errors | refused))
    except RedisError as exc:
        log.warning("The job store did not answer (%s); the batch goes back to the queue.", exc)
        return False
    return True
