"""``POST /evaluate``: measure the served model on a labelled dataset zip."""

from __future__ import annotations

from flask import Blueprint, request
from werkzeug.exceptions import RequestEntityTooLarge

from api import services
from api.errors import APIError
from api.predict import queued_response
from common.storage import bucket_key_from_url
from worker.celery import EVALUATE_TASK

bp = Blueprint("evaluate", __name__)

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def _body() -> dict:
    if not request.is_json:
        return request.form
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise APIError(400, "invalid_json", "The JSON body must be an object.")
    return body


def _store_zip() -> str | None:
    upload = request.files.get("file")
    if upload is None:
        return None
    if upload.stream.read(4) not in ZIP_MAGIC:
        raise APIError(415, "unsupported_media_type", "The dataset must be a zip file.")
    upload.stream.seek(0)
    return services.storage().save_file(upload.stream, "zip", "application/zip")


def _bucket_zip(url: object) -> str:
    settings = services.settings()
    if not isinstance(url, str) or not url.strip():
        raise APIError(400, "invalid_url", "dataset_url must be a non-empty string.")
    try:
        key = bucket_key_from_url(url, settings.gcs_bucket)
    except ValueError as exc:
        raise APIError(400, "url_not_allowed", str(exc)) from exc
    size = services.storage().size(key)
    if size is None:
        raise APIError(
            404, "dataset_not_found", f"gs://{settings.gcs_bucket}/{key} does not exist."
        )
    if size > settings.max_dataset_bytes:
        raise RequestEntityTooLarge()
    return key


@bp.post("/evaluate")
def evaluate():
    settings = services.settings()
    # Datasets may be far larger than photos: this route has its own body limit.
    request.max_content_length = settings.max_dataset_bytes + 64 * 1024
    body = _body()
    split = body.get("split") or None
    if split is not None and not isinstance(split, str):
        raise APIError(400, "invalid_split", "split must be a string such as 'test'.")
    dataset_key = _store_zip()
    if dataset_key is None and body.get("dataset_url") is None:
        raise APIError(400, "missing_field", "Send the zip as multipart 'file' or a 'dataset_url'.")
    if dataset_key is None:
        dataset_key = _bucket_zip(body["dataset_url"])
    jobs = services.jobs()
    job_id = jobs.create("evaluate")
    services.celery().send_task(EVALUATE_TASK, args=(job_id, dataset_key, split), task_id=job_id)
    return queued_response(job_id)
