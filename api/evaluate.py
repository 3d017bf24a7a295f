"""``POST /evaluate``: measure the served model on a labelled dataset zip."""

from __future__ import annotations

from flask import Blueprint, request

from api import inputs, services
from api.access import owner
from api.admission import EVALUATION_RETRY_AFTER_S
from api.errors import APIError
from api.inputs import MULTIPART_OVERHEAD_BYTES
from api.jobs import queued_response, send_job
from api.telemetry import ACCEPTED, request_id
from common.jobs import QueueFull
from common.messages import Evaluate

bp = Blueprint("evaluate", __name__)
bp.before_request(services.identify_caller)

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def _store_zip() -> str | None:
    upload = request.files.get("file")
    if upload is None:
        return None
    if upload.stream.read(4) not in ZIP_MAGIC:
        raise APIError(415, "unsupported_media_type", "The dataset must be a zip file.")
    upload.stream.seek(0)
    return services.storage().save_file(upload.stream, "zip", "application/zip")


def too_many_evaluations(limit: int) -> APIError:
    return APIError(
        429,
        "too_many_evaluations",
        f"{limit} evaluations are queued or running; try again when one has finished.",
        retry_after_s=EVALUATION_RETRY_AFTER_S,
    )


@bp.post("/evaluate")
def evaluate():
    settings = services.settings()
    # Datasets may be far larger than photos: this route has its own body limit.
    request.max_content_length = settings.max_dataset_bytes + MULTIPART_OVERHEAD_BYTES
    limit = settings.max_evaluations
    if services.jobs().pending("evaluate") >= limit:  # before the zip is read or stored
        raise too_many_evaluations(limit)
    split = inputs.fields().get("split") or None
    if split is not None and not isinstance(split, str):
        raise APIError(400, "invalid_split", "split must be a string such as 'test'.")
    url = inputs.url_field("dataset_url")
    if "file" in request.files and url is not None:
        raise APIError(400, "ambiguous_input", "Send either a file or a dataset_url, not both.")
    if url is not None:
        dataset_key = inputs.bucket_object(url, settings.max_dataset_bytes, "dataset_not_found")
    else:
        dataset_key = _store_zip()
    if dataset_key is None:
        raise APIError(400, "missing_field", "Send the zip as multipart 'file' or a 'dataset_url'.")
    message = Evaluate(dataset_key=dataset_key, split=split)
    try:
        job_id = services.jobs().create("evaluate", message, limit, owner=owner(),
                                        request_id=request_id())  # fmt: skip
    except QueueFull as exc:  # another took the last place since the look above
        raise too_many_evaluations(limit) from exc
    send_job(message, job_id)
    ACCEPTED.labels("evaluate").inc()
    return queued_response(job_id)
