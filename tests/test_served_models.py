"""A worker's served versions: switching, keeping the old one on a bad load, eviction."""

from dataclasses import replace

import pytest

from common.model_metadata import ModelMetadata
from common.registry import ModelRegistry
from common.settings import DEFAULT_MODEL_PATH
from worker import models
from worker.models import ServedModels


@pytest.fixture
def registry(tmp_path):
    registry = ModelRegistry.in_folder(tmp_path / "registry", "waste-classifier")
    registry.import_configured(DEFAULT_MODEL_PATH)
    return registry


def add_valid(registry, version: str, data: bytes | None = None) -> None:
    source = registry.model_path("demo-1")
    if data is not None:
        source = registry.store.folder.parent / "broken.h5"
        source.write_bytes(data)
    metadata = replace(ModelMetadata.for_model(DEFAULT_MODEL_PATH), version=version)
    registry.add(source, metadata, "valid")


def test_a_switch_follows_the_pointer_and_a_bad_load_keeps_the_old_model(registry, tmp_path):
    served = ServedModels(registry, tmp_path / "cache", accelerated=False)
    assert served.refresh() and served.active.metadata.version == "demo-1"
    assert not served.refresh()

    add_valid(registry, "v2")
    registry.activate("v2")
    assert served.refresh() and served.active.metadata.version == "v2"

    # Validated elsewhere, but this worker cannot load it: it keeps serving v2,
    # says why, and does not retry until the version is activated again.
    add_valid(registry, "v3", data=DEFAULT_MODEL_PATH.read_bytes()[:4096])
    registry.activate("v3")
    assert not served.refresh()
    assert served.active.metadata.version == "v2" and "v3" in served.load_error
    assert not served.refresh()


def test_the_active_runtime_is_never_evicted(registry, tmp_path, monkeypatch):
    monkeypatch.setattr(models, "KEEP_VERSIONS", 1)
    served = ServedModels(registry, tmp_path / "cache", accelerated=False)
    served.refresh()
    add_valid(registry, "v2")
    add_valid(registry, "v3")
    older = served.runtime("v2")
    served.runtime("v3")  # over the limit: v2 goes, the active demo-1 stays
    assert served.runtime("demo-1") is served.active
    assert served.runtime("v2") is not older
