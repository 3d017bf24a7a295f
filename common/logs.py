"""Log lines: one JSON object per line for machines, a readable line on a terminal.

``LOG_FORMAT`` is ``json``, ``text``, or ``auto`` (the default: JSON unless standard
error is a terminal). Every line names its service (``api``, ``worker``) and, where
known, the request it serves (``request_id``: the client's ``X-Request-ID`` or one the
API made, returned in the answer and carried into each photo's job), plus what the
call site adds: job ids, model version, batch size, timings. One library does it
(python-json-logger); Celery's own lines go through the same handler.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys

from pythonjsonlogger.json import JsonFormatter

# The request being served on this thread (the API), for every line logged meanwhile.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
TEXT = "%(asctime)s %(levelname)s %(service)s %(name)s: %(message)s"


class Context(logging.Filter):
    """Adds the service and the current request's id to every record."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        return True


def configure(service: str, log_format: str | None = None, level: int = logging.INFO) -> None:
    """Send every log line of this process to standard error, as JSON or text."""
    log_format = log_format or os.environ.get("LOG_FORMAT", "auto")
    as_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(Context(service))
    handler.setFormatter(
        JsonFormatter("%(asctime)s %(levelname)s %(service)s %(name)s %(message)s",
                      rename_fields={"levelname": "level", "asctime": "time"})
        if as_json else logging.Formatter(TEXT)
    )  # fmt: skip
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
