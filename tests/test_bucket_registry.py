"""The model registry in a bucket (a real gcp-storage-emulator): what hosts that share
nothing but the network see of versions, files and the active pointer."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from common.model_metadata import ModelMetadata, file_sha256
from common.registry import BucketStore, ModelRegistry, RegistryError, registry_from_settings
from common.settings import DEFAULT_MODEL_PATH, Settings
from common.storage import storage_from_settings


def host_registry(gcs_emulator, folder: Path, name: str) -> ModelRegistry:
    """The registry as one host sees it: the shared bucket, its own var folder."""
    settings = Settings(gcs_bucket=gcs_emulator.bucket, var_dir=folder, model_name=name)
    return registry_from_settings(settings, storage_from_settings(settings))


@pytest.fixture
def two_hosts(gcs_emulator, tmp_path):
    name = f"model-{uuid.uuid4().hex[:8]}"  # a fresh registry in the shared bucket
    return (host_registry(gcs_emulator, tmp_path / "host-a", name),
            host_registry(gcs_emulator, tmp_path / "host-b", name))  # fmt: skip


def test_a_version_added_on_one_host_serves_on_another_from_its_own_cache(two_hosts, tmp_path):
    a, b = two_hosts
    assert isinstance(a.store, BucketStore)
    active = a.import_configured(DEFAULT_MODEL_PATH)
    assert b.active_version() == active and b.versions() == [active]
    path = b.model_path(active)  # downloaded into host b's cache, by sha256
    assert path.is_relative_to(tmp_path / "host-b" / "registry-cache")
    assert path.parent.name == file_sha256(DEFAULT_MODEL_PATH) == file_sha256(path)
    assert ModelMetadata.for_model(path).version == active  # its metadata beside it
    # The configured model again, from the other host: nothing changes.
    assert b.import_configured(DEFAULT_MODEL_PATH) == active and b.versions() == [active]


def test_versions_are_never_replaced_and_moves_are_seen_everywhere(two_hosts):
    a, b = two_hosts
    first = a.import_configured(DEFAULT_MODEL_PATH)
    second = replace(ModelMetadata.for_model(DEFAULT_MODEL_PATH), version="v2")
    a.add(DEFAULT_MODEL_PATH, second, "validating")
    with pytest.raises(RegistryError) as exists:
        b.add(DEFAULT_MODEL_PATH, second, "valid")
    assert exists.value.code == "version_exists"
    assert b.status("v2")["state"] == "validating"  # the first add stands
    with pytest.raises(RegistryError) as refused:
        b.activate("v2")
    assert refused.value.code == "model_validating"
    b.set_status("v2", "valid", checks={"classes": 6})
    assert a.activate("v2") == first
    assert b.active_version() == "v2" and b.previous_version() == first
    assert [entry["version"] for entry in b.active()["history"]] == [first, "v2"]


@pytest.mark.parametrize("left", ["the same file", "another file"])
def test_an_add_that_died_midway_is_finished_by_the_next_unless_the_file_differs(
    two_hosts, monkeypatch, left
):
    a, _ = two_hosts
    metadata = replace(ModelMetadata.for_model(DEFAULT_MODEL_PATH), version="v3")
    name = f"versions/v3/{metadata.file}"
    data = DEFAULT_MODEL_PATH.read_bytes()
    create = a.store._create_or_replace  # the file alone, as an add that died left it
    create(name, data if left == "the same file" else b"other", 0, "application/octet-stream")

    def as_the_bucket_does(object_name: str, body: bytes, generation: int, kind: str) -> bool:
        """The emulator ignores preconditions: here the object there refuses a create."""
        if object_name == name:
            return False
        return create(object_name, body, generation, kind)

    monkeypatch.setattr(a.store, "_create_or_replace", as_the_bucket_does)
    if left == "the same file":
        a.add(DEFAULT_MODEL_PATH, metadata, "valid")
        assert "v3" in a.versions() and a.status("v3")["state"] == "valid"
    else:
        with pytest.raises(RegistryError) as exists:
            a.add(DEFAULT_MODEL_PATH, metadata, "valid")
        assert exists.value.code == "version_exists" and "v3" not in a.versions()


class RacingStore:
    """A bucket store whose first pointer write meets another host's write to it.

    The bucket refuses a write whose generation precondition no longer holds; that
    is what ``replace`` returns here after the other host's move lands in between.
    (gcp-storage-emulator itself ignores preconditions.)
    """

    def __init__(self, store: BucketStore, other: ModelRegistry, version: str) -> None:
        self._store, self._other, self._version = store, other, version
        self.raced = False

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def replace(self, name: str, data: dict, token: object) -> bool:
        if name == "active.json" and not self.raced:
            self.raced = True
            self._other.activate(self._version)  # lands first: our token is stale now
            return False
        return self._store.replace(name, data, token)


def test_a_pointer_move_that_meets_another_is_made_again_on_what_that_one_wrote(two_hosts):
    a, b = two_hosts
    first = a.import_configured(DEFAULT_MODEL_PATH)
    second = replace(ModelMetadata.for_model(DEFAULT_MODEL_PATH), version="v2")
    a.add(DEFAULT_MODEL_PATH, second, "valid")
    racing = ModelRegistry(RacingStore(a.store, b, "v2"), a.name)
    racing.activate(first)
    # Both moves are in the history, in the order they landed; ours is the last.
    assert [entry["version"] for entry in b.active()["history"]] == [first, "v2", first]
    assert b.active_version() == first
