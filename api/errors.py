"""One JSON error shape for every failure: ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import logging

from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from common.registry import RegistryError

log = logging.getLogger(__name__)


class APIError(Exception):
    """An error the client caused or should know about, with its HTTP status."""

    def __init__(self, status: int, code: str, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def error_response(status: int, code: str, message: str, **extra: object):
    return jsonify({"error": {"code": code, "message": message}, **extra}), status


def file_too_large():
    settings = current_app.config["SETTINGS"]
    what, limit_mb = {
        "evaluate.evaluate": ("Datasets", settings.max_dataset_mb),
        "models.upload_model": ("Model files", settings.max_model_mb),
    }.get(request.endpoint, ("Files", settings.max_upload_mb))
    return error_response(413, "file_too_large", f"{what} are limited to {limit_mb:g} MB.")


def register(app: Flask) -> None:
    @app.errorhandler(APIError)
    def api_error(exc: APIError):
        return error_response(exc.status, exc.code, exc.message, **exc.extra)

    @app.errorhandler(RegistryError)
    def registry_error(exc: RegistryError):
        return error_response(exc.status, exc.code, exc.message)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_: RequestEntityTooLarge):
        return file_too_large()

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception):
        log.exception("Unhandled error")
        return error_response(500, "internal_error", "The server failed; the error is logged.")
