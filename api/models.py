"""Model management: list, upload (validated by a worker), activate and roll back versions.

Every route needs ``Authorization: Bearer <ADMIN_API_KEY>``; without a key in the
settings they answer 403 and change nothing. Activation moves the registry's pointer
and publishes a notice; each worker loads the version and switches between batches.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from flask import Blueprint, g, request
from redis import RedisError
from werkzeug.datastructures import FileStorage
from werkzeug.routing import BaseConverter

from api import inputs, services
from api.access import ADMIN_OWNER, bearer_token, matches, owner
from api.errors import APIError
from api.evaluate import ZIP_MAGIC
from api.inputs import MULTIPART_OVERHEAD_BYTES
from api.jobs import queued_response, send_job
from common.heartbeat import live_workers
from common.messages import ValidateModel
from common.model_metadata import FORMAT_NAMES, RESERVED_VERSIONS, ModelMetadata, file_sha256
from common.registry import ACTIVATION_CHANNEL

bp = Blueprint("models", __name__)


class VersionConverter(BaseConverter):
    """A version in a path, never one of the reserved words: ``/models/active`` and
    ``/models/rollback`` are their own routes, and a method they lack is a 405 there."""

    part_isolating = True  # one path segment, though the pattern names "/"
    regex = rf"(?!(?:{'|'.join(sorted(RESERVED_VERSIONS))})\Z)[^/]+"


# Before the routes below are added, which need it.
bp.record_once(lambda state: state.app.url_map.converters.update(version=VersionConverter))

# Leading bytes of each uploadable format; ONNX (a bare protobuf) has none to check.
FILE_SIGNATURES: dict[str, tuple[int, bytes]] = {
    "h5": (0, b"\x89HDF\r\n\x1a\n"),
    "keras": (0, ZIP_MAGIC[0]),  # a .keras file is a zip
    "tflite": (4, b"TFL3"),
}
UPLOAD_FORMATS = ("h5", "keras", "onnx", "tflite")
MAX_METADATA_BYTES = 64 * 1024


@bp.before_request
def require_admin_key() -> None:
    key = services.settings().admin_api_key
    if key is None:
        raise APIError(
            403,
            "model_management_disabled",
            "Model management is off: set ADMIN_API_KEY in the service's settings.",
        )
    given = bearer_token()
    if given is None or not matches(given, key):
        raise APIError(401, "unauthorized", "Send 'Authorization: Bearer <admin API key>'.")
    # The validations it starts are the admin's jobs (everyone's with keys off).
    g.owner = ADMIN_OWNER if services.api_keys() is not None else ""


@bp.get("/models")
def list_models():
    registry = services.registry()
    active = registry.active()
    return {
        "name": registry.name,
        "active": active["version"],
        "history": active["history"],
        "versions": [registry.describe(v, active["version"]) for v in registry.versions()],
        # What each live worker serves, so a switch can be followed from here.
        "workers": live_workers(services.health_redis()),
    }


@bp.get("/models/<version:version>")
def get_model(version: str):
    registry = services.registry()
    return registry.describe(version, registry.active_version())


@bp.get("/models/active")
def get_active_model():
    registry = services.registry()
    active = registry.active_version()
    if active is None:
        raise APIError(404, "no_active_version", "No version has been activated yet.")
    return registry.describe(active, active)


def _metadata_fields() -> dict[str, Any]:
    """The metadata JSON, sent as a file part or a form field named ``metadata``."""
    part = request.files.get("metadata")
    raw = part.read(MAX_METADATA_BYTES + 1) if part is not None else request.form.get("metadata")
    if raw is None:
        raise APIError(400, "missing_field", "Send the model's metadata JSON as 'metadata'.")
    if len(raw) > MAX_METADATA_BYTES:
        raise APIError(
            413, "metadata_too_large", f"The metadata is limited to {MAX_METADATA_BYTES} bytes."
        )
    try:
        fields = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise APIError(400, "invalid_metadata", f"The metadata is not JSON: {exc}") from exc
    if not isinstance(fields, dict):
        raise APIError(400, "invalid_metadata", "The metadata must be a JSON object.")
    return fields


def _upload_format(upload: FileStorage) -> str:
    suffix = Path(upload.filename or "").suffix.lstrip(".").lower()
    if suffix not in UPLOAD_FORMATS:
        raise APIError(
            415,
            "unsupported_model_format",
            f"Upload a model file ending in {', '.join('.' + f for f in UPLOAD_FORMATS)} "
            f"({', '.join(FORMAT_NAMES[f] for f in UPLOAD_FORMATS)}).",
        )
    offset, signature = FILE_SIGNATURES.get(suffix, (0, b""))
    head = upload.stream.read(offset + len(signature))
    upload.stream.seek(0)
    if head[offset:] != signature:
        raise APIError(
            415, "unsupported_model_format", f"The file is not a {FORMAT_NAMES[suffix]} file."
        )
    return suffix


@bp.post("/models")
def upload_model():
    """Store a model version as ``validating`` and have a worker validate it."""
    settings = services.settings()
    request.max_content_length = settings.max_model_bytes + MULTIPART_OVERHEAD_BYTES
    upload = request.files.get("model")
    if upload is None:
        raise APIError(400, "missing_field", "Send the model file as multipart field 'model'.")
    upload_format = _upload_format(upload)
    fields = _metadata_fields()
    registry = services.registry()
    registry.staging.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=registry.staging) as staging:
        path = Path(staging) / f"model.{upload_format}"
        upload.save(path)
        metadata = ModelMetadata.from_upload(fields, upload_format, file_sha256(path))
        registry.add(path, metadata, "validating", origin="upload")
    return _queue_validation(metadata.version)


@bp.post("/models/<version:version>/validate")
def revalidate(version: str):
    """Validate a version again: after a worker failed mid-validation, or a fix elsewhere."""
    registry = services.registry()
    if registry.status(version)["state"] == "valid":
        raise APIError(409, "already_valid", f"Version {version!r} is already valid.")
    registry.set_status(version, "validating")
    return _queue_validation(version)


def _queue_validation(version: str):
    jobs = services.jobs()
    message = ValidateModel(version=version)
    job_id = jobs.create("validate_model", message, version=version, owner=owner())
    send_job(message, job_id)
    body, status = queued_response(job_id)
    return {**body, "version": version, "state": "validating"}, status


def _activate(version: str) -> dict[str, Any]:
    previous = services.registry().activate(version)
    try:
        notified = services.jobs().redis.publish(ACTIVATION_CHANNEL, version)
    except RedisError:  # the pointer moved; workers also look at it on their own
        notified = 0
    return {"active": version, "previous": previous, "workers_notified": notified}


@bp.put("/models/active")
def activate():
    version = inputs.fields().get("version")
    if version is None:
        raise APIError(400, "missing_field", 'Send {"version": "..."}.')
    return _activate(version)


@bp.post("/models/rollback")
def rollback():
    """Activate the version that was active before the current one."""
    return _activate(services.registry().previous_version())
