"""The model management API over the Flask client: keys, uploads, activation rules."""

import io
import json
from dataclasses import replace

import pytest

from api import create_app
from common.model_metadata import ModelMetadata
from common.settings import DEFAULT_MODEL_PATH

KEY = "test-admin-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def admin_client(settings):
    app = create_app({"TESTING": True, "SETTINGS": replace(settings, admin_api_key=KEY)})
    return app.test_client()


def metadata_json(**changes) -> str:
    fields = json.loads(DEFAULT_MODEL_PATH.with_name("default.h5.json").read_text())
    fields.update({"version": "v2", "sha256": None, **changes})
    return json.dumps(fields)


def upload(client, data=None, filename="model.h5", metadata=None, headers=AUTH):
    form = {"model": (io.BytesIO(data or DEFAULT_MODEL_PATH.read_bytes()), filename)}
    if metadata is not False:
        form["metadata"] = metadata or metadata_json()
    return client.post("/models", data=form, headers=headers)


def test_management_is_off_without_a_configured_key(client):
    for response in (client.get("/models"), upload(client)):
        assert response.status_code == 403
        assert response.json["error"]["code"] == "model_management_disabled"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}])
def test_a_wrong_or_missing_key_is_refused(admin_client, headers):
    response = admin_client.put("/models/active", json={"version": "demo-1"}, headers=headers)
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthorized"


def test_the_configured_model_is_listed_as_active(admin_client):
    listing = admin_client.get("/models", headers=AUTH).json
    assert listing["active"] == "demo-1"
    [version] = listing["versions"]
    assert version["version"] == "demo-1" and version["active"] and version["state"] == "valid"
    assert admin_client.get("/model-info").json["version"] == "demo-1"


def test_an_upload_is_stored_as_validating_and_queued(admin_client):
    response = upload(admin_client)
    assert response.status_code == 202
    assert response.json["version"] == "v2" and response.json["state"] == "validating"
    assert response.json["status_url"].endswith(f"/jobs/{response.json['job_id']}")
    described = admin_client.get("/models/v2", headers=AUTH).json
    assert described["state"] == "validating" and described["origin"] == "upload"
    assert described["sha256"] == ModelMetadata.for_model(DEFAULT_MODEL_PATH).sha256
    # Not validated yet, so not activatable; the active model keeps serving.
    refused = admin_client.put("/models/active", json={"version": "v2"}, headers=AUTH)
    assert refused.status_code == 409
    assert refused.json["error"]["code"] == "model_validating"
    assert admin_client.get("/model-info").json["version"] == "demo-1"


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"filename": "model.pt"}, 415, "unsupported_model_format"),
        ({"data": b"not an hdf5 file"}, 415, "unsupported_model_format"),
        ({"metadata": False}, 400, "missing_field"),
        ({"metadata": "{not json"}, 400, "invalid_metadata"),
        ({"metadata": "[1, 2]"}, 400, "invalid_metadata"),
        ({"metadata": metadata_json(version="../x")}, 422, "invalid_version"),
        ({"metadata": metadata_json(classes="Kaca")}, 422, "invalid_metadata"),
        ({"metadata": metadata_json(input_size=[128])}, 422, "invalid_metadata"),
        ({"metadata": metadata_json(scale=0)}, 422, "invalid_metadata"),
        ({"metadata": metadata_json(sha256="0" * 64)}, 422, "sha256_mismatch"),
        ({"metadata": metadata_json(format="onnx")}, 422, "format_mismatch"),
        ({"metadata": metadata_json(version="demo-1")}, 409, "version_exists"),
    ],
)
def test_bad_uploads_are_refused_with_a_reason(admin_client, kwargs, status, code):
    response = upload(admin_client, **kwargs)
    assert response.status_code == status, response.json
    assert response.json["error"]["code"] == code
    assert [v["version"] for v in admin_client.get("/models", headers=AUTH).json["versions"]] == [
        "demo-1"
    ]


def test_an_oversized_model_is_refused_with_413(settings):
    app = create_app(
        {"TESTING": True, "SETTINGS": replace(settings, admin_api_key=KEY, max_model_mb=0.1)}
    )
    response = upload(app.test_client())
    assert response.status_code == 413
    assert "Model files are limited to 0.1 MB" in response.json["error"]["message"]


def test_activation_errors(admin_client):
    missing = admin_client.put("/models/active", json={"version": "nope"}, headers=AUTH)
    assert (missing.status_code, missing.json["error"]["code"]) == (404, "version_not_found")
    empty = admin_client.put("/models/active", json={}, headers=AUTH)
    assert (empty.status_code, empty.json["error"]["code"]) == (400, "missing_field")
    rollback = admin_client.post("/models/rollback", headers=AUTH)
    assert (rollback.status_code, rollback.json["error"]["code"]) == (409, "no_previous_version")
