"""Evaluate the served model on a dataset zip, in chunks on a low-priority queue.

``start`` reads only the zip's central directory, checks its limits, picks the
images and enqueues one chunk task per ``eval_chunk_size`` images. Each chunk reads
its members straight from the zip (nothing is extracted to disk), classifies them
through the same decoding and model call as predictions, and records its labels
in Redis. The chunk that completes the set computes the metrics (scikit-learn) and
the confusion-matrix picture. A worker takes prediction jobs before chunks, so a
large evaluation delays a photo by at most one chunk.
"""

from __future__ import annotations

import functools
import itertools
import json
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from common.datasets import DatasetError, ZipLimits, plan_zip, read_member
from common.jobs import JobStore, utc_now
from common.labels import CLASSES
from common.messages import Evaluate, EvaluateChunk
from common.preprocessing import ImageLimits
from common.reports import confusion_png, metrics
from common.settings import Settings
from common.storage import Storage, StorageError
from worker import metrics as worker_metrics
from worker.inference import prepare_each
from worker.runtime import ModelRuntime

Items = list[tuple[str, int]]
SUB_BATCH = 16


def _open_zip(storage: Storage, dataset_key: str, settings: Settings) -> zipfile.ZipFile:
    path = storage.local_path(dataset_key)
    if path.stat().st_size > settings.max_dataset_bytes:
        raise DatasetError(
            "dataset_too_large", f"Datasets are limited to {settings.max_dataset_mb:g} MB."
        )
    return _zip_at(path)


@functools.lru_cache(maxsize=4)
def _zip_at(path: Path) -> zipfile.ZipFile:
    """Open each zip once per worker: its central directory is parsed once, not per chunk.

    ``ZipFile`` serialises reads of its shared file handle, so the decoding threads
    may read members concurrently.
    """
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise DatasetError("not_a_zip", "The dataset is not a readable zip file.") from exc


def start(
    job_id: str,
    message: Evaluate,
    storage: Storage,
    jobs: JobStore,
    settings: Settings,
    submit_chunk: Callable[[EvaluateChunk], None],
    model_version: str,
) -> None:
    """Plan the evaluation and enqueue its chunks; a refused dataset fails the job.

    The job records ``model_version`` (the active one now) and every chunk is
    classified by that version, even if another is activated meanwhile.
    """
    try:
        archive = _open_zip(storage, message.dataset_key, settings)
        plan = plan_zip(archive, ZipLimits.from_settings(settings), message.split)
    except DatasetError as exc:
        jobs.fail(job_id, exc.code, exc.message)
        return
    except StorageError as exc:
        jobs.fail(job_id, "dataset_not_found", str(exc))
        return
    size = settings.eval_chunk_size
    chunks = [plan.items[i : i + size] for i in range(0, len(plan.items), size)]
    if jobs.transition(
        job_id,
        ("queued",),
        status="running",
        started_at=utc_now(),
        started_ts=time.time(),
        total=len(plan.items),
        done=0,
        chunks_total=len(chunks),
        chunks_done=0,
        split=plan.split or "",
        plan_skipped=json.dumps(dict(plan.skipped)),
        unmatched_folders=json.dumps(plan.unmatched_folders),
        model_version=model_version,
    ):
        jobs.progressed(job_id)
        jobs.claim_chunk_sending(job_id, settings.broker_lease_s / 2)
        pending = range(len(chunks))
    else:
        # This message came again: the worker that started the job may have died
        # before sending every chunk (its message then comes back after a lease).
        # Those not yet recorded are sent again (the plan is the same; a chunk sent
        # twice counts once), unless a copy of this message just did.
        record = jobs.get(job_id)
        if record is None or record["status"] != "running":
            return
        if not jobs.claim_chunk_sending(job_id, settings.broker_lease_s / 2):
            return
        pending = [i for i in range(len(chunks)) if not jobs.chunk_recorded(job_id, i)]
    for index in pending:
        submit_chunk(EvaluateChunk(job_id, message.dataset_key, index, chunks[index]))


def run_chunk(
    message: EvaluateChunk,
    runtime_for: Callable[[str], ModelRuntime],
    storage: Storage,
    jobs: JobStore,
    settings: Settings,
    limits: ImageLimits,
) -> None:
    """Classify one chunk; the last chunk to finish writes the job's result.

    A chunk already recorded (its message came again) is not classified again, but
    may still finish the job: the first run may have died before finishing it, and
    finishing is done once whoever calls it (``finish`` checks).
    """
    job_id = message.job_id
    record = jobs.get(job_id)
    if record is None or record["status"] != "running":
        return
    if jobs.chunk_recorded(job_id, message.index):
        done = int(record["chunks_done"])
    else:
        runtime = runtime_for(record["model_version"])
        try:
            archive = _open_zip(storage, message.dataset_key, settings)
        except (DatasetError, StorageError) as exc:
            jobs.fail(job_id, "dataset_unreadable", f"The dataset could not be read: {exc}")
            return
        outcome = classify_chunk(message.items, archive, runtime, limits)
        done = jobs.add_chunk(job_id, message.index, outcome, len(message.items))
        worker_metrics.EVALUATION_IMAGES.inc(len(message.items))
    if done == int(record["chunks_total"]):
        finish(job_id, jobs)


def classify_chunk(
    items: Items, archive: zipfile.ZipFile, runtime: ModelRuntime, limits: ImageLimits
) -> dict[str, Any]:
    """The true and predicted service labels of a chunk's readable images."""
    # The model's output order may differ from the service's; labels are service indices.
    to_service = np.array([CLASSES.index(name) for name in runtime.metadata.classes])
    prepared = prepare_each(
        [partial(read_member, archive, name) for name, _ in items], runtime.metadata, limits
    )
    y_true: list[int] = []
    y_pred: list[int] = []
    # The model runs on each sub-batch as soon as it is decoded while the decoding
    # threads go on with the next one, so decoding and inference overlap.
    for start in range(0, len(items), SUB_BATCH):
        group = items[start : start + SUB_BATCH]
        readable = [(label, array) for (_, label), array
                    in zip(group, itertools.islice(prepared, len(group)), strict=True)
                    if isinstance(array, np.ndarray)]  # fmt: skip
        if readable:
            y_true += [label for label, _ in readable]
            batch = np.stack([array for _, array in readable])
            y_pred += to_service[runtime.predict(batch).argmax(axis=1)].tolist()
    return {
        "y_true": y_true,
        "y_pred": y_pred,
        "skipped": {"unreadable_image": len(items) - len(y_true)},
        "model_version": runtime.metadata.version,
        "classified_at": utc_now(),
    }


def finish(job_id: str, jobs: JobStore) -> None:
    record = jobs.get(job_id)
    if record is None or record["status"] != "running":
        return
    outcomes = jobs.chunk_outcomes(job_id)
    y_true = [label for outcome in outcomes for label in outcome["y_true"]]
    y_pred = [label for outcome in outcomes for label in outcome["y_pred"]]
    skipped = sum(
        (Counter(outcome["skipped"]) for outcome in outcomes),
        Counter(json.loads(record["plan_skipped"])),
    )
    if not y_true:
        jobs.fail(job_id, "no_readable_images", "No image of the dataset was readable.")
        return
    result = metrics(y_true, y_pred) | {
        "images": len(y_true),
        "split": record.get("split") or None,
        "skipped": {reason: count for reason, count in sorted(skipped.items()) if count},
        "unmatched_folders": json.loads(record["unmatched_folders"]),
        "model_version": record["model_version"],
        "duration_s": round(time.time() - float(record["started_ts"]), 2),
    }
    jobs.put_blob(job_id, "confusion.png", confusion_png(result["confusion_matrix"]["matrix"]))
    if jobs.transition(job_id, ("running",), status="succeeded", result=json.dumps(result),
                       finished_at=utc_now()):  # fmt: skip
        worker_metrics.JOBS_FINISHED.labels("evaluate", "succeeded").inc()  # once a job
