"""The one shape of a refusal: a machine-readable ``code`` and a message for people.

Images, datasets, metadata, the registry and task messages all refuse things the
same way, so the API answers every one of them with the same JSON error and a
worker records every one of them in a job the same way. HTTP statuses belong to the
API (``api/errors.py``), not here: a worker or the command line has none.
"""

from __future__ import annotations


class Refusal(Exception):
    """Something the service will not do, and why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def as_error(self) -> dict[str, str]:
        """The ``{"code", "message"}`` a job record or a response carries."""
        return {"code": self.code, "message": self.message}
