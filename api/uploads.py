"""``GET /uploads/<name>``: photos kept in the local upload folder (default storage).

Only photos: a dataset zip uploaded for evaluation is the operator's data, read by
the workers and never served back.
"""

from __future__ import annotations

from flask import Blueprint, send_from_directory

from api import services
from api.errors import APIError
from common.preprocessing import FILE_EXTENSIONS
from common.storage import LocalStorage, StorageError

PHOTO_EXTENSIONS = frozenset(FILE_EXTENSIONS.values())

bp = Blueprint("uploads", __name__)


@bp.get("/uploads/<name>")
def serve(name: str):
    storage = services.storage()
    try:
        if not isinstance(storage, LocalStorage) or name.rpartition(".")[2] not in PHOTO_EXTENSIONS:
            raise StorageError(name)
        path = storage.path_for(f"uploads/{name}")
    except StorageError as exc:
        raise APIError(404, "not_found", f"No upload named {name!r}.") from exc
    return send_from_directory(path.parent, path.name, max_age=3600)
