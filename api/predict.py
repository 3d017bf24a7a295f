"""``POST /predict``: store or locate the photo, enqueue a job, optionally wait."""

from __future__ import annotations

from functools import partial

from flask import Blueprint, request
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import RequestEntityTooLarge

from api import inputs, services
from api.access import owner
from api.errors import APIError, job_error_status
from api.jobs import queued_response
from api.telemetry import ACCEPTED, name_job, request_id
from common.jobs import MAX_WAIT_S, new_job_id
from common.labels import DEFAULT_LANGUAGE, LANGUAGES
from common.messages import Photo
from common.preprocessing import ALLOWED_FORMATS, FILE_EXTENSIONS, ImageLimits, verify_image

bp = Blueprint("predict", __name__)
bp.before_request(services.identify_caller)


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


def store_upload(upload: FileStorage, job_id: str) -> tuple[str, str]:
    """Check the uploaded photo and store it, named after its job.

    What the file carries after the image's own end (an HTML page, a phone's
    trailer) is cut off rather than the photo re-encoded: cutting needs no decode,
    and the pixels the model sees stay the client's.
    """
    settings = services.settings()
    data = upload.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise RequestEntityTooLarge()
    image = verify_image(data, ImageLimits.from_settings(settings))
    storage = services.storage()
    key = storage.save(
        image.data, FILE_EXTENSIONS[image.format], ALLOWED_FORMATS[image.format], name=job_id
    )
    return key, storage.public_url(key, settings.base_url)


@bp.post("/predict")
def predict():
    settings = services.settings()
    lang = language()
    wait_s = wait_seconds()
    services.admission().refuse_photo_if_full()  # before the body is read
    upload = request.files.get("file")
    url = inputs.url_field("url")
    if upload is not None and url is not None:
        raise APIError(400, "ambiguous_input", "Send either a file or a url, not both.")
    job_id = new_job_id()
    name_job(job_id)
    if upload is not None:
        image_key, image_url = store_upload(upload, job_id)
    elif url is not None:
        image_key = inputs.bucket_object(url, settings.max_upload_bytes, "image_not_found")
        image_url = services.storage().public_url(image_key, settings.base_url)
    else:
        raise APIError(
            400, "missing_field", "Send the photo as multipart field 'file' or a bucket 'url'."
        )
    photo = partial(Photo, job_id=job_id, image_key=image_key, image_url=image_url, lang=lang,
                    request_id=request_id())  # fmt: skip
    slots = services.waiting_slots()
    if wait_s and slots.acquire(blocking=False):
        try:
            waiter = services.waiter()
            with waiter.expect(job_id) as outcome:
                services.sender().send(photo(reply_to=waiter.reply_channel), owner())
                record = outcome(wait_s)
        finally:
            slots.release()
    else:  # no wait asked, or every waiting slot is taken: the client polls the job
        services.sender().send(photo(reply_to=""), owner())
        record = None
    ACCEPTED.labels("predict").inc()
    if record is None:
        return queued_response(job_id)
    if record["status"] == "failed":
        error = record["error"]
        raise APIError(job_error_status(error), error["code"], error["message"], job_id=job_id)
    return record["result"], 200
