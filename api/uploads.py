"""``GET /uploads/<name>``: photos kept in the local upload folder (default storage).

Only photos: a dataset zip uploaded for evaluation is the operator's data, read by
the workers and never served back. A photo is named after its job, so with API keys
on it is served only to the key that owns the job.
"""

from __future__ import annotations

from flask import Blueprint, send_from_directory

from api import services
from api.errors import APIError
from api.jobs import existing
from common.preprocessing import FILE_EXTENSIONS
from common.storage import LocalStorage, StorageError

PHOTO_EXTENSIONS = frozenset(FILE_EXTENSIONS.values())

bp = Blueprint("uploads", __name__)
bp.before_request(services.identify_caller)


@bp.get("/uploads/<name>")
def serve(name: str):
    storage = services.storage()
    try:
        if not isinstance(storage, LocalStorage) or name.rpartition(".")[2] not in PHOTO_EXTENSIONS:
            raise StorageError(name)
        path = storage.path_for(f"uploads/{name}")
        if services.api_keys() is not None:
            existing(name.partition(".")[0])
    except (StorageError, APIError) as exc:
        raise APIError(404, "not_found", f"No upload named {name!r}.") from exc
    response = send_from_directory(path.parent, path.name, max_age=3600)
    # The type the API detected when the photo came in (its extension), never a guess
    # from the bytes; cached by the client only; and nothing in it may run.
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, max-age=3600"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response
