"""``POST /predict``: store or locate the photo, enqueue a job, optionally wait."""

from __future__ import annotations

from flask import Blueprint, request, url_for
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import RequestEntityTooLarge

from api import services
from api.errors import APIError
from api.jobs import job_view
from common.labels import DEFAULT_LANGUAGE, LANGUAGES
from common.preprocessing import ALLOWED_FORMATS, FILE_EXTENSIONS, ImageRejected, verify_image
from common.storage import bucket_key_from_url
from worker.celery import PREDICT_TASK

bp = Blueprint("predict", __name__)

MAX_WAIT_S = 30.0


def language() -> str:
    lang = request.args.get("lang", DEFAULT_LANGUAGE)
    if lang not in LANGUAGES:
        raise APIError(400, "invalid_lang", f"lang must be one of {', '.join(LANGUAGES)}.")
    return lang


def wait_seconds() -> float:
    raw = request.args.get("wait")
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_WAIT_S:
        raise APIError(
            400, "invalid_wait", f"wait must be a number of seconds from 0 to {MAX_WAIT_S:g}."
        )
    return value


def requested_url() -> str | None:
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise APIError(400, "invalid_json", "The JSON body must be an object.")
        url = body.get("url")
    else:
        url = request.form.get("url")
    if url is not None and (not isinstance(url, str) or not url.strip()):
        raise APIError(400, "invalid_url", "url must be a non-empty string.")
    return url


def store_upload(upload: FileStorage) -> tuple[str, str]:
    """Check the uploaded photo and store it under a generated name."""
    settings = services.settings()
    data = upload.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise RequestEntityTooLarge()
    try:
        image_format = verify_image(data, settings.max_image_pixels)
    except ImageRejected as exc:
        raise APIError(exc.status, exc.code, exc.message) from exc
    storage = services.storage()
    key = storage.save(data, FILE_EXTENSIONS[image_format], ALLOWED_FORMATS[image_format])
    return key, storage.public_url(key, request.host_url)


def locate_bucket_object(url: str) -> tuple[str, str]:
    """Check that ``url`` names an existing object of the configured bucket."""
    settings = services.settings()
    try:
        key = bucket_key_from_url(url, settings.gcs_bucket)
    except ValueError as exc:
        raise APIError(400, "url_not_allowed", str(exc)) from exc
    storage = services.storage()
    size = storage.size(key)
    if size is None:
        raise APIError(404, "image_not_found", f"gs://{settings.gcs_bucket}/{key} does not exist.")
    if size > settings.max_upload_bytes:
        raise RequestEntityTooLarge()
    return key, storage.public_url(key, request.host_url)


@bp.post("/predict")
def predict():
    lang = language()
    wait_s = wait_seconds()
    upload = request.files.get("file")
    url = requested_url()
    if upload is not None and url is not None:
        raise APIError(400, "ambiguous_input", "Send either a file or a url, not both.")
    if upload is not None:
        image_key, image_url = store_upload(upload)
    elif url is not None:
        image_key, image_url = locate_bucket_object(url)
    else:
        raise APIError(
            400, "missing_field", "Send the photo as multipart field 'file' or a bucket 'url'."
        )

    jobs = services.jobs()
    job_id = jobs.create("predict", image_url=image_url)
    services.celery().send_task(
        PREDICT_TASK,
        kwargs={"image_key": image_key, "image_url": image_url, "lang": lang},
        task_id=job_id,
    )
    record = services.waiter().wait(job_id, wait_s) if wait_s else None
    if record is None:
        return queued_response(job_id)
    if record["status"] == "failed":
        raise APIError(422, record["error"]["code"], record["error"]["message"], job_id=job_id)
    return record["result"], 200


def queued_response(job_id: str):
    record = services.jobs().get(job_id) or {"status": "queued"}
    view = job_view(record | {"job_id": job_id})
    return {
        "job_id": job_id,
        "status": view["status"],
        "status_url": url_for("jobs.get_job", job_id=job_id, _external=True),
    }, 202
