"""``GET /model-info``: the served model, from its metadata file (no model loading)."""

from __future__ import annotations

from flask import Blueprint

from api import services
from common.model_metadata import ModelMetadata

bp = Blueprint("model_info", __name__)


@bp.get("/model-info")
def model_info():
    metadata = ModelMetadata.for_model(services.settings().model_path)
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
