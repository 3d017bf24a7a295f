"""The API's contract: an OpenAPI 3 document of every route, at ``/openapi.json``, and
an interactive page of it at ``/docs`` (Swagger UI's own files, from the
swagger-ui-bundle package: nothing is fetched from a CDN).

The document is written here by hand, next to the routes it describes, and checked
against the live stack by ``tests/test_openapi.py`` (schemathesis: every documented
operation, with generated inputs; no 5xx, every answer's status, type and body as
documented).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, send_from_directory
from swagger_ui_bundle import swagger_ui_path

from common.jobs import MAX_WAIT_S
from common.labels import CLASSES, LANGUAGES
from common.preprocessing import ASPECTS, RESIZE_METHODS

bp = Blueprint("openapi", __name__)

JSON = "application/json"
STRING = {"type": "string"}
NUMBER = {"type": "number"}
NULLABLE_STRING = {"type": "string", "nullable": True}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def answer(description: str, schema: dict | None = None, kind: str = JSON) -> dict[str, Any]:
    return {
        "description": description,
        **({"content": {kind: {"schema": schema}}} if schema else {}),
    }


def errors(*statuses: int) -> dict[str, Any]:
    """The error answers of an operation: each the one JSON error shape."""
    described = {
        400: "Bad input",
        401: "No API key, or an unknown one (keys on)",
        403: "Management is off (no ADMIN_API_KEY)",
        404: "Not found (or another key's)",
        405: "Method not allowed",
        409: "Conflict with the resource's state",
        413: "Too large",
        415: "Unsupported media type",
        422: "The image or metadata could not be used",
        429: "Too many requests",
        503: "Unavailable: overloaded, Redis or the bucket down",
    }
    return {str(status): answer(described[status], ref("Error")) for status in statuses}


WAIT = {
    "name": "wait",
    "in": "query",
    "required": False,
    "description": "Seconds to wait for the result (0: answer 202 at once)",
    "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S},
}
LANG = {
    "name": "lang",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": list(LANGUAGES)},
}
JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": STRING}
VERSION = {"name": "version", "in": "path", "required": True, "schema": STRING}
ADMIN = [{"admin": []}]

SCHEMAS: dict[str, Any] = {
    "Error": obj(
        ["error"], error=obj(["code", "message"], code=STRING, message=STRING), job_id=STRING
    ),
    "Queued": obj(
        ["job_id", "status", "status_url"],
        job_id=STRING,
        status={
            "type": "string",
            "enum": ["queued", "running", "succeeded", "failed", "cancelled"],
        },
        status_url=STRING,
    ),
    "Result": obj(
        [
            "job_id",
            "label",
            "confidence",
            "suggestion",
            "image_url",
            "model_version",
            "top_k",
            "probabilities",
        ],
        job_id=STRING,
        label={"type": "string", "enum": list(CLASSES)},
        confidence=NUMBER,
        suggestion=STRING,
        image_url=STRING,
        model_version=STRING,
        top_k={
            "type": "array",
            "items": obj(["label", "confidence"], label=STRING, confidence=NUMBER),
        },
        probabilities={"type": "object", "additionalProperties": NUMBER},
    ),
    "Job": obj(
        ["job_id", "kind", "status", "created_at"],
        job_id=STRING,
        kind={"type": "string", "enum": ["predict", "evaluate", "validate_model"]},
        status={
            "type": "string",
            "enum": ["queued", "running", "succeeded", "failed", "cancelled"],
        },
        created_at=NULLABLE_STRING,
        started_at=NULLABLE_STRING,
        finished_at=NULLABLE_STRING,
        result={"type": "object"},
        error=obj(["code", "message"], code=STRING, message=STRING),
        progress={"type": "object", "nullable": True},
    ),
    "ModelInfo": obj(
        [
            "model",
            "description",
            "input_size",
            "output_classes",
            "version",
            "preprocessing",
            "outputs",
        ],
        model=STRING,
        description=STRING,
        input_size=STRING,
        output_classes={"type": "array", "items": STRING},
        version=STRING,
        format=STRING,
        file=STRING,
        sha256=STRING,
        outputs={"type": "string", "enum": ["probabilities", "logits"]},
        preprocessing=obj(
            ["resize", "resize_backend", "aspect"],
            resize={
                "type": "string",
                "enum": sorted({m for methods in RESIZE_METHODS.values() for m in methods}),
            },
            resize_backend={"type": "string", "enum": list(RESIZE_METHODS)},
            aspect={"type": "string", "enum": list(ASPECTS)},
        ),
    ),
    "Health": obj(
        ["status"],
        status=STRING,
        redis=STRING,
        down={"type": "array", "items": STRING},
        workers={"type": "array", "items": {"type": "object"}},
        error=obj(["code", "message"], code=STRING, message=STRING),
    ),
    "Models": obj(
        ["name", "active", "versions"],
        name=STRING,
        active=NULLABLE_STRING,
        history={"type": "array"},
        versions={"type": "array"},
        workers={"type": "array"},
    ),
    "Version": obj(["version", "state"], version=STRING, state=STRING, active={"type": "boolean"}),
    "Activation": obj(
        ["active"], active=STRING, previous=NULLABLE_STRING, workers_notified={"type": "integer"}
    ),
}


def photo_body() -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}, "url": STRING},
                }
            },
            JSON: {"schema": obj(["url"], url=STRING)},
        },
    }


def dataset_body() -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}, "split": STRING},
                }
            },
            JSON: {"schema": obj(["dataset_url"], dataset_url=STRING, split=STRING)},
        },
    }


PATHS: dict[str, Any] = {
    "/predict": {
        "post": {
            "summary": "Classify a photo: a multipart file, or a bucket URL",
            "parameters": [WAIT, LANG],
            "requestBody": photo_body(),
            "responses": {
                "200": answer("The result (with ?wait)", ref("Result")),
                "202": answer("Queued: poll status_url", ref("Queued")),
                **errors(400, 401, 404, 413, 415, 422, 429, 503),
            },
        }
    },
    "/jobs/{job_id}": {
        "get": {
            "summary": "A job's state and, once finished, its result or error",
            "parameters": [JOB_ID],
            "responses": {"200": answer("The job", ref("Job")), **errors(401, 404, 503)},
        },
        "delete": {
            "summary": "Cancel an evaluation",
            "parameters": [JOB_ID],
            "responses": {"200": answer("Cancelled", ref("Job")), **errors(401, 404, 409, 503)},
        },
    },
    "/jobs/{job_id}/confusion.png": {
        "get": {
            "summary": "A finished evaluation's confusion matrix",
            "parameters": [JOB_ID],
            "responses": {
                "200": answer("The picture", {"type": "string", "format": "binary"}, "image/png"),
                **errors(401, 404, 503),
            },
        }
    },
    "/evaluate": {
        "post": {
            "summary": "Evaluate the served model on a labelled dataset zip",
            "requestBody": dataset_body(),
            "responses": {
                "202": answer("Queued", ref("Queued")),
                **errors(400, 401, 404, 413, 415, 429, 503),
            },
        }
    },
    "/uploads/{name}": {
        "get": {
            "summary": "A stored photo (local storage)",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": STRING}],
            "responses": {
                "200": {
                    "description": "The photo",
                    "content": {
                        kind: {"schema": {"type": "string", "format": "binary"}}
                        for kind in ("image/jpeg", "image/png", "image/webp")
                    },
                },
                **errors(401, 404),
            },
        }
    },
    "/model-info": {
        "get": {
            "summary": "The active model version",
            "responses": {"200": answer("It", ref("ModelInfo")), **errors(503)},
        }
    },
    "/health": {
        "get": {
            "summary": "Redis and the live workers, in detail",
            "responses": {"200": answer("Up", ref("Health")), "503": answer("Down", ref("Health"))},
        }
    },
    "/readyz": {
        "get": {
            "summary": "Ready: Redis answers, each queue has a live worker",
            "responses": {
                "200": answer("Ready", ref("Health")),
                "503": answer("Not ready", ref("Health")),
            },
        }
    },
    "/livez": {
        "get": {
            "summary": "The API process answers",
            "responses": {"200": answer("Alive", ref("Health"))},
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics of every API process",
            "responses": {"200": answer("Metrics", STRING, "text/plain")},
        }
    },
    "/models": {
        "get": {
            "summary": "The model's versions, the active one, each worker's",
            "security": ADMIN,
            "responses": {"200": answer("Them", ref("Models")), **errors(401, 403)},
        },
        "post": {
            "summary": "Upload a model version (validated by a worker)",
            "security": ADMIN,
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "model": {"type": "string", "format": "binary"},
                                "metadata": STRING,
                            },
                        }
                    }
                },
            },
            "responses": {
                "202": answer("Validating", ref("Queued")),
                **errors(400, 401, 403, 409, 413, 415, 422, 503),
            },
        },
    },
    "/models/{version}": {
        "get": {
            "summary": "One version",
            "security": ADMIN,
            "parameters": [VERSION],
            "responses": {"200": answer("It", ref("Version")), **errors(401, 403, 404, 422)},
        }
    },
    "/models/{version}/validate": {
        "post": {
            "summary": "Validate a version again",
            "security": ADMIN,
            "parameters": [VERSION],
            "responses": {
                "202": answer("Validating", ref("Queued")),
                **errors(401, 403, 404, 409, 422, 503),
            },
        }
    },
    "/models/active": {
        "get": {
            "summary": "The active version",
            "security": ADMIN,
            "responses": {"200": answer("It", ref("Version")), **errors(401, 403, 404, 422)},
        },
        "put": {
            "summary": "Activate a valid version",
            "security": ADMIN,
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": obj(["version"], version=STRING)}},
            },
            "responses": {
                "200": answer("Activated", ref("Activation")),
                **errors(400, 401, 403, 404, 409, 422),
            },
        },
    },
    "/models/rollback": {
        "post": {
            "summary": "Activate the version active before",
            "security": ADMIN,
            "responses": {"200": answer("Activated", ref("Activation")), **errors(401, 403, 409)},
        }
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "EcoSnap ML",
        "version": "1",
        "description": "Waste-photo classification behind a job queue. Every error is "
        '{"error": {"code", "message"}}. With API keys on, send '
        "Authorization: Bearer <key>.",
    },
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "admin": {"type": "http", "scheme": "bearer"},
            "key": {"type": "http", "scheme": "bearer"},
        },
    },
    "security": [{}, {"key": []}],
}

DOCS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>EcoSnap ML API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="docs"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/init.js"></script></body></html>
"""
DOCS_INIT = 'SwaggerUIBundle({url: "/openapi.json", dom_id: "#docs"});\n'


@bp.get("/openapi.json")
def document():
    return DOCUMENT


@bp.get("/docs")
def docs():
    return DOCS_PAGE, 200, {"Content-Type": "text/html; charset=utf-8"}


@bp.get("/docs/assets/<path:name>")
def docs_asset(name: str):
    if name == "init.js":
        return DOCS_INIT, 200, {"Content-Type": "text/javascript; charset=utf-8"}
    return send_from_directory(swagger_ui_path, name, max_age=86400)
