"""Who is calling: optional named API keys, and the jobs each key owns.

Off by default, for local use: no key is asked for and every job is everyone's. With
``API_KEYS`` (``name=key`` pairs, comma-separated) or ``API_KEYS_FILE`` (one
``name=key`` per line, ``#`` comments), ``/predict``, ``/evaluate``, ``/jobs/*`` and
``/uploads/*`` need ``Authorization: Bearer <key>``; a job belongs to the key that
made it and is a 404 for any other (read, cancel, photo, confusion matrix). The
admin key of ``/models`` is separate; the jobs it makes (validations) belong to it.

A presented key is hashed and compared in constant time with every known key's
hash, so neither a match nor its position shows in the time taken; keys are never
logged, and only the key's name is stored in a job.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from flask import g, request

from api.errors import APIError
from common.settings import Settings

KEY_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MIN_KEY_LENGTH = 16
# The owner of the jobs made with the admin key: no key name can look like it.
ADMIN_OWNER = "@admin"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def bearer_token() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def matches(presented: str, key: str) -> bool:
    """Whether ``presented`` is ``key``, in time that does not depend on where they differ."""
    return hmac.compare_digest(_digest(presented), _digest(key))


@dataclass(frozen=True)
class ApiKeys:
    """Key names by the SHA-256 of their keys."""

    names: dict[bytes, str]

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys | None:
        """The configured keys, or None when keys are off; a malformed entry stops
        the API at start, with the line's number but never the key."""
        sources = [settings.api_keys or ""]
        if settings.api_keys_file is not None:
            sources.append(settings.api_keys_file.read_text())
        entries = [
            entry.strip()
            for source in sources
            for line in source.splitlines()
            for entry in line.split("#", 1)[0].split(",")
            if entry.strip()
        ]
        names: dict[bytes, str] = {}
        for number, entry in enumerate(entries, 1):
            name, _, key = (part.strip() for part in entry.partition("="))
            if not KEY_NAME.match(name) or len(key) < MIN_KEY_LENGTH:
                raise ValueError(
                    f"API key entry {number} must be name=key: a name of letters, digits, "
                    f"'_', '.' or '-', and a key of at least {MIN_KEY_LENGTH} characters."
                )
            names[_digest(key)] = name
        return cls(names) if names else None

    def name_of(self, presented: str) -> str | None:
        digest = _digest(presented)
        found = None
        for known, name in self.names.items():  # every one, whatever matches first
            if hmac.compare_digest(digest, known):
                found = name
        return found


def identify(keys: ApiKeys | None, admin_key: str | None) -> None:
    """Set ``g.owner`` for this request: "" with keys off, else the key's name (or
    ``ADMIN_OWNER`` for the admin key); 401 without a known key."""
    if keys is None:
        g.owner = ""
        return
    token = bearer_token()
    if token is None:
        raise APIError(401, "missing_api_key", "Send 'Authorization: Bearer <API key>'.")
    name = keys.name_of(token)
    if name is None and admin_key is not None and matches(token, admin_key):
        name = ADMIN_OWNER
    if name is None:
        raise APIError(401, "invalid_api_key", "The API key is not known.")
    g.owner = name


def owner() -> str:
    """The owner of the jobs this request makes or may see ("" with keys off)."""
    return g.get("owner", "")
