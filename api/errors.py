"""One JSON error shape for every failure: ``{"error": {"code", "message"}}``.

The HTTP status of each refusal the project's modules raise lives here, with the
API: ``common/`` says what is refused and why, the API says how HTTP answers it.
"""

from __future__ import annotations

import logging

from flask import Flask, current_app, jsonify, request
from kombu.exceptions import OperationalError
from redis import RedisError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from common.errors import Refusal
from common.jobs import WORKER_ERROR
from common.messages import MalformedMessage
from common.storage import STORAGE_UNAVAILABLE, StorageUnavailable

log = logging.getLogger(__name__)

# Statuses of the refusals raised outside the API; any other code is a 400.
STATUS_BY_CODE = {
    "image_too_large": 413,
    "unsupported_media_type": 415,
    "invalid_metadata": 422,
    "invalid_version": 422,
    "sha256_mismatch": 422,
    "format_mismatch": 422,
    "version_not_found": 404,
    "version_exists": 409,
    "model_validating": 409,
    "model_invalid": 409,
    "no_previous_version": 409,
}
# A job that failed for one of these failed through the service's fault, not its input.
SERVICE_FAULTS = frozenset({WORKER_ERROR["code"], MalformedMessage.CODE, STORAGE_UNAVAILABLE})
# What a client is told to wait before it tries again while Redis or the broker is down.
RETRY_AFTER_S = 5


class APIError(Refusal):
    """A refusal of the API's own, with its HTTP status, any extra response fields, and
    how long the client should wait before trying again (``Retry-After``), if at all."""

    def __init__(
        self, status: int, code: str, message: str, retry_after_s: int | None = None,
        **extra: object,
    ) -> None:  # fmt: skip
        super().__init__(code, message)
        self.status = status
        self.retry_after_s = retry_after_s
        self.extra = extra


def http_status(refusal: Refusal) -> int:
    if isinstance(refusal, APIError):
        return refusal.status
    return STATUS_BY_CODE.get(refusal.code, 400)


def job_error_status(error: dict[str, str]) -> int:
    """A failed job's status: 503 when the service failed it, else 422 (its input)."""
    return 503 if error["code"] in SERVICE_FAULTS else 422


def error_response(status: int, code: str, message: str, **extra: object):
    return jsonify({"error": {"code": code, "message": message}, **extra}), status


def retry_later(code: str, message: str):
    """A 503 for an outage, with how long to wait before trying again."""
    response, status = error_response(503, code, message)
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response, status


def file_too_large():
    settings = current_app.config["SETTINGS"]
    what, limit_mb = {
        "evaluate.evaluate": ("Datasets", settings.max_dataset_mb),
        "models.upload_model": ("Model files", settings.max_model_mb),
    }.get(request.endpoint, ("Files", settings.max_upload_mb))
    return error_response(413, "file_too_large", f"{what} are limited to {limit_mb:g} MB.")


def register(app: Flask) -> None:
    @app.errorhandler(Refusal)
    def refused(exc: Refusal):
        if not isinstance(exc, APIError):
            return error_response(http_status(exc), exc.code, exc.message)
        response, status = error_response(exc.status, exc.code, exc.message, **exc.extra)
        if exc.retry_after_s is not None:
            response.headers["Retry-After"] = str(exc.retry_after_s)
        return response, status

    @app.errorhandler(RedisError)
    @app.errorhandler(OperationalError)
    def unavailable(exc: Exception):
        log.warning("Redis or the broker is unavailable: %s", exc)
        return retry_later(
            "unavailable", "The job store or the queue is unavailable; try again shortly."
        )

    @app.errorhandler(StorageUnavailable)
    def storage_unavailable(exc: StorageUnavailable):
        log.warning("The bucket is unavailable: %s", exc)
        return retry_later(STORAGE_UNAVAILABLE, f"{exc} Try again shortly.")

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_: RequestEntityTooLarge):
        return file_too_large()

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        response, status = error_response(exc.code or 500, code, exc.description or exc.name)
        if "Allow" in (allow := dict(exc.get_headers())):  # a 405 names the allowed methods
            response.headers["Allow"] = allow["Allow"]
        return response, status

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception):
        log.exception("Unhandled error")
        return error_response(500, "internal_error", "The server failed; the error is logged.")
