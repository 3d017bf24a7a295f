"""``.h5`` files saved by Keras 2 (tf.keras) load, answer as Keras 2 did, and validate.

The fixtures were written by tf-keras 2.21 (``tests/fixtures/legacy/make_legacy_models.py``):
the seed's kind of small CNN and the notebook transfer-learning pattern of a
MobileNetV2 nested in a Sequential, which Keras 3 alone cannot read.
"""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from common.model_metadata import ModelMetadata
from common.registry import ModelRegistry
from worker.conversion import accelerate
from worker.legacy_keras import is_keras2_h5
from worker.runtime import KerasRuntime, OnnxRuntime, load_runtime
from worker.validation import InvalidModel, validate

FIXTURES = Path(__file__).parent / "fixtures" / "legacy"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
NAMES = sorted(EXPECTED)


def fixture_batch(metadata: ModelMetadata) -> np.ndarray:
    """The inputs the fixture script gave Keras 2, drawn again from the same seed."""
    width, height = metadata.input_size
    pixels = np.random.default_rng(0).uniform(0, 255, (4, height, width, 3))
    return (pixels * metadata.preprocessing.scale).astype(np.float32)


@pytest.mark.parametrize("name", NAMES)
def test_keras2_files_answer_as_keras2_did(name):
    path = FIXTURES / f"{name}.h5"
    assert is_keras2_h5(path)
    runtime = load_runtime(path)
    assert isinstance(runtime, KerasRuntime)
    np.testing.assert_allclose(
        runtime.predict(fixture_batch(runtime.metadata)), EXPECTED[name], atol=1e-5
    )


def registry_with(tmp_path, name: str, **metadata_changes) -> ModelRegistry:
    registry = ModelRegistry.in_folder(tmp_path, "legacy")
    path = FIXTURES / f"{name}.h5"
    metadata = replace(ModelMetadata.for_model(path), **metadata_changes)
    registry.add(path, metadata, "validating")
    return registry


@pytest.mark.parametrize("name", NAMES)
def test_keras2_files_pass_validation(tmp_path, name):
    registry = registry_with(tmp_path, name)
    version = registry.versions()[0]
    checks = validate(registry, version)
    assert checks["classes"] == 6 and checks["sample_images"] == 12


def test_a_model_that_contradicts_its_metadata_is_invalid(tmp_path):
    registry = registry_with(tmp_path, "legacy_cnn", input_size=(128, 128))
    with pytest.raises(InvalidModel, match=r"takes input \(None, 64, 64, 3\)"):
        validate(registry, "legacy-cnn")
    five = registry_with(tmp_path / "b", "legacy_cnn", classes=("Kaca", "Logam", "Kertas"))
    with pytest.raises(InvalidModel, match="metadata lists 3 classes"):
        validate(five, "legacy-cnn")
    unknown = registry_with(tmp_path / "c", "legacy_cnn", classes=("Kaca",) * 6)
    with pytest.raises(InvalidModel, match="distinct names"):
        validate(unknown, "legacy-cnn")


def test_a_corrupt_file_is_invalid(tmp_path):
    broken = tmp_path / "src" / "legacy_cnn.h5"
    broken.parent.mkdir()
    broken.write_bytes((FIXTURES / "legacy_cnn.h5").read_bytes()[:5000])
    shutil.copy(FIXTURES / "legacy_cnn.h5.json", broken.parent)
    registry = ModelRegistry.in_folder(tmp_path / "registry", "legacy")
    registry.add(broken, ModelMetadata.for_model(broken), "validating")
    with pytest.raises(InvalidModel, match="does not load"):
        validate(registry, "legacy-cnn")


@pytest.mark.slow
def test_a_keras2_mobilenet_is_accelerated_with_onnx(tmp_path):
    runtime = load_runtime(FIXTURES / "legacy_mobilenet.h5")
    accelerated = accelerate(runtime, tmp_path)
    assert isinstance(accelerated, OnnxRuntime)
    np.testing.assert_allclose(
        accelerated.predict(fixture_batch(runtime.metadata)), EXPECTED["legacy_mobilenet"],
        atol=1e-5,
    )  # fmt: skip
