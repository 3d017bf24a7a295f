"""``GET /jobs/<job_id>``: a job's state and, once finished, its result or error."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from api import services
from api.errors import APIError

bp = Blueprint("jobs", __name__)

PUBLIC_FIELDS = ("job_id", "kind", "status", "created_at", "started_at", "finished_at")


def job_view(record: dict[str, Any]) -> dict[str, Any]:
    view = {name: record.get(name) for name in PUBLIC_FIELDS}
    for name in ("result", "error"):
        if name in record:
            view[name] = record[name]
    return view


@bp.get("/jobs/<job_id>")
def get_job(job_id: str):
    record = services.jobs().get(job_id)
    if record is None:
        raise APIError(404, "job_not_found", f"No job {job_id!r}; it may have expired.")
    return job_view(record)
