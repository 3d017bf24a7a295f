"""``GET /uploads/<name>``: photos kept in the local upload folder (default storage)."""

from __future__ import annotations

from flask import Blueprint, send_from_directory

from api import services
from api.errors import APIError
from common.storage import LocalStorage, StorageError

bp = Blueprint("uploads", __name__)


@bp.get("/uploads/<name>")
def serve(name: str):
    storage = services.storage()
    try:
        if not isinstance(storage, LocalStorage):
            raise StorageError(name)
        path = storage.path_for(f"uploads/{name}")
    except StorageError as exc:
        raise APIError(404, "not_found", f"No upload named {name!r}.") from exc
    return send_from_directory(path.parent, path.name, max_age=3600)
