"""``GET /model-info``: the active model version, from its metadata (no model loading)."""

from __future__ import annotations

from flask import Blueprint

from api import services

bp = Blueprint("model_info", __name__)


@bp.get("/model-info")
def model_info():
    registry = services.registry()
    metadata = registry.metadata(registry.active_version())
    return {
        "model": metadata.format_name,
        "description": metadata.description,
        "input_size": metadata.input_size_text,
        "output_classes": list(metadata.classes),
        "version": metadata.version,
        "format": metadata.format,
        "file": metadata.file,
        "sha256": metadata.sha256,
    }
