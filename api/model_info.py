"""``GET /model-info``: the active model version, from its metadata (no model loading)."""

from __future__ import annotations

from flask import Blueprint

from api import services
from api.errors import APIError
from common.errors import Refusal

bp = Blueprint("model_info", __name__)


@bp.get("/model-info")
def model_info():
    registry = services.registry()
    version = registry.active_version()
    try:
        metadata = registry.metadata(version)
    except Refusal as exc:  # no active version, or its folder was removed by hand
        raise APIError(503, "no_active_model", f"No servable model version ({version}).") from exc
    return {
        "model": metadata.format_name,
        "description": metadata.description,
        "input_size": metadata.input_size_text,
        "output_classes": list(metadata.classes),
        "version": metadata.version,
        "format": metadata.format,
        "file": metadata.file,
        "sha256": metadata.sha256,
        # How a photo is turned into the model's input, and what the model outputs.
        "preprocessing": metadata.preprocessing.to_fields(),
        "outputs": metadata.outputs,
    }
