"""The model management API over the Flask client: keys, uploads, activation rules."""

import io
import json
import shutil
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
        if isinstance(form["metadata"], tuple):  # (file name, text): a file part
            name, text = form["metadata"]
            form["metadata"] = (io.BytesIO(text.encode()), name)
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


def test_nested_or_non_string_inputs_are_client_errors(admin_client):
    deep = "[" * 10_000 + "]" * 10_000
    response = admin_client.put(
        "/models/active", data=deep, content_type="application/json", headers=AUTH
    )
    assert (response.status_code, response.json["error"]["code"]) == (400, "invalid_json")
    assert upload(admin_client, metadata=deep).json["error"]["code"] == "invalid_metadata"
    number = admin_client.put("/models/active", json={"version": 7}, headers=AUTH)
    assert (number.status_code, number.json["error"]["code"]) == (422, "invalid_version")


@pytest.mark.parametrize(
    ("metadata", "status", "code"),
    [
        (metadata_json(classes=["Kaca", "Bottle"]), 422, "invalid_metadata"),
        (metadata_json(description="x" * 501), 422, "invalid_metadata"),
        (metadata_json(extra=[1]), 422, "invalid_metadata"),
        (metadata_json(preprocessing={"preset": []}), 422, "invalid_metadata"),
        (metadata_json(preprocessing={"scale": float("nan")}), 422, "invalid_metadata"),
        (
            metadata_json(preprocessing={"mean": [0, 0, float("inf")], "std": [1, 1, 1]}),
            422,
            "invalid_metadata",
        ),
        (metadata_json(extra={"notes": "x" * 70_000}), 413, "metadata_too_large"),
    ],
)
def test_metadata_is_checked_before_anything_is_stored(admin_client, metadata, status, code):
    response = upload(admin_client, metadata=("m.json", metadata))
    assert (response.status_code, response.json["error"]["code"]) == (status, code)


def test_a_version_can_be_validated_again_unless_valid(admin_client):
    assert upload(admin_client).status_code == 202
    again = admin_client.post("/models/v2/validate", headers=AUTH)
    assert again.status_code == 202 and again.json["state"] == "validating"
    valid = admin_client.post("/models/demo-1/validate", headers=AUTH)
    assert (valid.status_code, valid.json["error"]["code"]) == (409, "already_valid")


def test_model_info_says_so_when_the_active_version_is_gone(admin_client, settings):
    shutil.rmtree(settings.registry_dir / "waste-classifier" / "versions" / "demo-1")
    response = admin_client.get("/model-info")
    assert (response.status_code, response.json["error"]["code"]) == (503, "no_active_model")
