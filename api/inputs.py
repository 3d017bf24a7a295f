"""Request inputs shared by ``/predict`` and ``/evaluate``: fields and bucket objects."""

from __future__ import annotations

from typing import Any

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from api import services
from api.errors import APIError
from common.storage import bucket_key_from_url

MULTIPART_OVERHEAD_BYTES = 64 * 1024


def fields() -> dict[str, Any]:
    """The JSON object body, or the form fields of any other body."""
    if not request.is_json:
        return request.form
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # nested past the parser's depth; Werkzeug lets it through
        body = None
    if not isinstance(body, dict):
        raise APIError(400, "invalid_json", "The JSON body must be an object.")
    return body


def url_field(name: str) -> str | None:
    url = fields().get(name)
    if url is not None and (not isinstance(url, str) or not url.strip()):
        raise APIError(400, "invalid_url", f"{name} must be a non-empty string.")
    return url


def bucket_object(url: str, max_bytes: int, not_found_code: str) -> str:
    """The key of an existing object of the configured bucket no larger than ``max_bytes``.

    Only the bucket's metadata is asked for; the URL itself is never fetched.
    """
    settings = services.settings()
    try:
        key = bucket_key_from_url(url, settings.gcs_bucket)
    except ValueError as exc:
        raise APIError(400, "url_not_allowed", str(exc)) from exc
    size = services.storage().size(key)
    if size is None:
        raise APIError(404, not_found_code, f"gs://{settings.gcs_bucket}/{key} does not exist.")
    if size > max_bytes:
        raise RequestEntityTooLarge()
    return key
