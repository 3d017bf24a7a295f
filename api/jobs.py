"""``GET /jobs/<job_id>``: a job's state and, once finished, its result or error."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, Response, url_for
from redis import RedisError

from api import services
from api.access import owner
from api.errors import APIError
from api.telemetry import name_job
from common.messages import Message
from common.redis_client import REDIS_DOWN

log = logging.getLogger(__name__)
bp = Blueprint("jobs", __name__)
bp.before_request(services.identify_caller)

PUBLIC_FIELDS = ("job_id", "kind", "status", "created_at", "started_at", "finished_at")


def progress(record: dict[str, Any]) -> dict[str, Any] | None:
    """Images done and total, percent, rate and time left of an evaluation once it has
    started; the rate and time left only mean something while it runs."""
    if "total" not in record:
        return None
    done, total = int(record["done"]), int(record["total"])
    elapsed = max(time.time() - float(record["started_ts"]), 1e-6)
    rate = done / elapsed
    return {
        "done": done,
        "total": total,
        "percent": round(100 * done / total, 1) if total else 100.0,
        "images_per_s": round(rate, 1),
        "eta_s": round((total - done) / rate, 1) if rate else None,
    }


def job_view(record: dict[str, Any]) -> dict[str, Any]:
    view = {name: record.get(name) for name in PUBLIC_FIELDS}
    if record.get("kind") == "evaluate":
        view["progress"] = progress(record)
    for name in ("result", "error"):
        if name in record:
            view[name] = record[name]
    return view


def send_job(message: Message, job_id: str) -> None:
    """Send a new job's message. Its record keeps the message, so when the broker
    does not take it now a worker sends it again (``worker/redelivery.py``): the job
    will run, and the client gets its id rather than a 503."""
    try:
        message.send(services.celery(), job_id)
    except REDIS_DOWN as exc:
        log.warning("The broker did not take job %s's message (%s); it is sent again "
                    "from its record.", job_id, exc)  # fmt: skip


def queued_response(job_id: str):
    """The 202 answer to a route that made a job: its id, status and where to poll.

    The job exists (its message is sent), so the client must learn its id even when
    Redis stops answering now: the status is then reported as ``queued``.
    """
    try:
        record = services.jobs().get(job_id) or {"status": "queued"}
    except RedisError:
        record = {"status": "queued"}
    view = job_view(record | {"job_id": job_id})
    name_job(job_id)
    return {
        "job_id": job_id,
        "status": view["status"],
        # From the configured public address, never from the request's Host header.
        "status_url": services.settings().base_url + url_for("jobs.get_job", job_id=job_id),
    }, 202


def existing(job_id: str) -> dict[str, Any]:
    """The caller's job: another key's job is as unknown as one that never was."""
    record = services.jobs().get(job_id)
    if record is None or record.get("owner", "") != owner():
        raise APIError(404, "job_not_found", f"No job {job_id!r}; it may have expired.")
    return record


@bp.get("/jobs/<job_id>")
def get_job(job_id: str):
    return job_view(existing(job_id))


@bp.delete("/jobs/<job_id>")
def cancel_job(job_id: str):
    """Cancel an evaluation; chunks not yet classified are dropped."""
    if existing(job_id)["kind"] != "evaluate":
        raise APIError(409, "not_cancellable", "Only evaluation jobs can be cancelled.")
    if not services.jobs().cancel(job_id):
        raise APIError(409, "already_finished", "The job has already finished.")
    return job_view(existing(job_id))


@bp.get("/jobs/<job_id>/confusion.png")
def confusion_png(job_id: str):
    existing(job_id)
    png = services.jobs().get_blob(job_id, "confusion.png")
    if png is None:
        raise APIError(
            404, "not_ready", "The confusion matrix exists once the evaluation succeeds."
        )
    return Response(png, mimetype="image/png")
