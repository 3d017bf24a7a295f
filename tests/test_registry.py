"""The model registry folder: versions, states, the active pointer and rollback."""

import json
import os
import shutil
from dataclasses import replace

import pytest

from api.errors import http_status
from common.model_metadata import MetadataError, ModelMetadata, file_sha256
from common.registry import ModelRegistry, RegistryError
from common.settings import DEFAULT_MODEL_PATH


@pytest.fixture
def registry(tmp_path):
    return ModelRegistry.in_folder(tmp_path / "registry", "waste-classifier")


def add_version(registry, version, state="valid"):
    metadata = replace(ModelMetadata.for_model(DEFAULT_MODEL_PATH), version=version)
    return registry.add(DEFAULT_MODEL_PATH, metadata, state)


def test_the_configured_model_is_imported_once_and_activated(registry):
    assert registry.import_configured(DEFAULT_MODEL_PATH) == "demo-1"
    assert registry.versions() == ["demo-1"]
    assert registry.status("demo-1")["state"] == "valid"
    assert registry.model_path("demo-1").read_bytes() == DEFAULT_MODEL_PATH.read_bytes()
    # The same file again changes nothing, so an API activation survives restarts.
    add_version(registry, "v2")
    registry.activate("v2")
    assert registry.import_configured(DEFAULT_MODEL_PATH) == "v2"
    assert registry.versions() == ["demo-1", "v2"]


def test_a_process_that_loses_the_race_to_add_the_configured_model_still_serves_it(
    registry, tmp_path, monkeypatch
):
    """Two workers start at once: the other one added the file a moment after this one
    listed the versions, and has not activated it yet."""
    metadata = ModelMetadata.for_model(DEFAULT_MODEL_PATH)
    other = ModelRegistry.in_folder(tmp_path / "registry", "waste-classifier")
    sha256 = file_sha256(DEFAULT_MODEL_PATH)
    other.add(DEFAULT_MODEL_PATH, replace(metadata, sha256=sha256), "valid")
    monkeypatch.setattr(registry, "versions", lambda: [])  # as this one listed them
    assert registry.import_configured(DEFAULT_MODEL_PATH) == metadata.version
    assert other.active_version() == metadata.version


def test_a_new_configured_file_with_a_taken_version_gets_a_suffix(registry, tmp_path):
    registry.import_configured(DEFAULT_MODEL_PATH)
    changed = tmp_path / "default.h5"
    changed.write_bytes(DEFAULT_MODEL_PATH.read_bytes() + b"\0")
    shutil.copy(DEFAULT_MODEL_PATH.with_name("default.h5.json"), tmp_path / "default.h5.json")
    version = registry.import_configured(changed)
    assert version.startswith("demo-1+") and registry.active_version() == version


def test_activation_keeps_a_history_and_rollback_finds_the_previous(registry):
    registry.import_configured(DEFAULT_MODEL_PATH)
    add_version(registry, "v2")
    assert registry.activate("v2") == "demo-1"
    assert registry.previous_version() == "demo-1"
    registry.activate("demo-1")
    assert registry.previous_version() == "v2"
    history = [entry["version"] for entry in registry.active()["history"]]
    assert history == ["demo-1", "v2", "demo-1"]
    on_disk = json.loads((registry.store.folder / "active.json").read_text())
    assert on_disk["version"] == "demo-1"


def test_only_a_valid_version_can_be_activated(registry):
    add_version(registry, "pending", state="validating")
    with pytest.raises(RegistryError) as refused:
        registry.activate("pending")
    assert (http_status(refused.value), refused.value.code) == (409, "model_validating")
    error = {"code": "invalid_model", "message": "It outputs 5 classes."}
    registry.set_status("pending", "invalid", error=error)
    with pytest.raises(RegistryError) as refused:
        registry.activate("pending")
    assert refused.value.code == "model_invalid" and "5 classes" in refused.value.message
    assert registry.active_version() is None


def test_versions_are_never_replaced_and_names_are_checked(registry):
    add_version(registry, "v1")
    with pytest.raises(RegistryError) as exists:
        add_version(registry, "v1")
    assert exists.value.code == "version_exists"
    for bad in ("../escape", "", "a/b", ".hidden", "x" * 65):
        with pytest.raises(MetadataError) as invalid:
            add_version(registry, bad)
        assert invalid.value.code == "invalid_version"
    with pytest.raises(RegistryError) as missing:
        registry.status("nope")
    assert http_status(missing.value) == 404
    assert registry.versions() == ["v1"]


def test_rollback_needs_an_earlier_version(registry):
    registry.import_configured(DEFAULT_MODEL_PATH)
    with pytest.raises(RegistryError) as refused:
        registry.previous_version()
    assert refused.value.code == "no_previous_version"


def test_half_copied_versions_are_never_listed_and_stale_ones_are_cleared(registry):
    registry.import_configured(DEFAULT_MODEL_PATH)
    leftover = registry.staging / "tmpabc"
    leftover.mkdir(parents=True)
    (leftover / "status.json").write_text("{}")
    os.utime(leftover, (0, 0))
    assert registry.versions() == ["demo-1"]
    registry.import_configured(DEFAULT_MODEL_PATH)
    assert not leftover.exists()


def test_a_dangling_active_pointer_falls_back_to_the_configured_model(registry):
    registry.import_configured(DEFAULT_MODEL_PATH)
    add_version(registry, "v2")
    registry.activate("v2")
    shutil.rmtree(registry.store.folder / "versions" / "v2")
    assert registry.import_configured(DEFAULT_MODEL_PATH) == "demo-1"


def test_a_new_status_keeps_what_the_version_was_added_with(registry):
    add_version(registry, "v2", state="validating")
    registry.set_status("v2", "invalid", error={"code": "invalid_model", "message": "m"})
    registry.set_status("v2", "valid", checks={"classes": 6})
    status = registry.status("v2")
    assert status["state"] == "valid" and "error" not in status and "added_at" in status


def test_route_names_are_not_version_names(registry):
    for reserved in ("active", "rollback"):
        with pytest.raises(MetadataError):
            add_version(registry, reserved)
