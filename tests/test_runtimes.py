"""Every model format, produced from the shipped model, answers like the Keras model."""

from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from common.model_metadata import ModelMetadata, file_sha256, model_format
from common.settings import DEFAULT_MODEL_PATH
from worker.conversion import ParityError, accelerate, check_parity, sample_batch
from worker.runtime import KerasRuntime, OnnxRuntime, load_runtime


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """The shipped model in every format, written by ``ecosnap export``."""
    folder = tmp_path_factory.mktemp("exports")
    paths = {"h5": folder / "model.h5"}
    paths["h5"].write_bytes(DEFAULT_MODEL_PATH.read_bytes())
    ModelMetadata.for_model(DEFAULT_MODEL_PATH).write_for(paths["h5"])
    import keras

    paths["keras"] = folder / "model.keras"
    keras.models.load_model(paths["h5"], compile=False).save(paths["keras"])
    ModelMetadata.for_model(paths["h5"]).write_for(paths["keras"])
    for target, suffix in (("savedmodel", ""), ("onnx", ".onnx"), ("tflite", ".tflite")):
        paths[target] = folder / f"model_{target}{suffix}"
        assert (
            main(["export", str(paths["h5"]), "--to", target, "--output", str(paths[target])]) == 0
        )
    return paths


@pytest.fixture(scope="module")
def reference():
    runtime = load_runtime(DEFAULT_MODEL_PATH)
    batch = sample_batch(runtime.metadata, per_class=3, seed=77)
    return batch, runtime.predict(batch)


@pytest.mark.parametrize("fmt", ["h5", "keras", "savedmodel", "onnx", "tflite"])
def test_every_runtime_gives_the_same_answers(exported, reference, fmt):
    batch, expected = reference
    runtime = load_runtime(exported[fmt])
    assert model_format(exported[fmt]) == fmt
    for size in (1, len(batch), 5):
        actual = runtime.predict(batch[:size])
        np.testing.assert_array_equal(actual.argmax(axis=1), expected[:size].argmax(axis=1))
        np.testing.assert_allclose(actual, expected[:size], atol=1e-4, rtol=0)


@pytest.mark.parametrize("fmt", ["savedmodel", "onnx", "tflite"])
def test_exports_carry_their_own_metadata(exported, fmt):
    metadata = ModelMetadata.for_model(exported[fmt])
    assert metadata.format == fmt
    assert metadata.sha256 == file_sha256(exported[fmt])
    assert metadata.version == ModelMetadata.for_model(DEFAULT_MODEL_PATH).version


def test_parity_check_refuses_a_model_that_answers_differently(reference):
    batch, _ = reference
    source = load_runtime(DEFAULT_MODEL_PATH)

    class Shifted:
        metadata = source.metadata

        def predict(self, images):
            return np.roll(source.predict(images), 1, axis=1)

    with pytest.raises(ParityError):
        check_parity(source, Shifted(), batch)


def test_accelerated_path_serves_keras_through_onnx(tmp_path, reference):
    batch, expected = reference
    keras_runtime = load_runtime(DEFAULT_MODEL_PATH)
    assert isinstance(keras_runtime, KerasRuntime)
    fast = accelerate(keras_runtime, tmp_path)
    assert isinstance(fast, OnnxRuntime)
    assert fast.metadata.version == keras_runtime.metadata.version
    np.testing.assert_allclose(fast.predict(batch), expected, atol=1e-4, rtol=0)
    assert list(tmp_path.glob("*.onnx"))


def test_unknown_model_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown model format"):
        model_format(tmp_path / "model.pt")


def test_accelerated_path_falls_back_to_keras_when_conversion_fails(tmp_path, monkeypatch):
    import worker.conversion

    def broken(*_args, **_kwargs):
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(worker.conversion, "write_converted", broken)
    keras_runtime = load_runtime(DEFAULT_MODEL_PATH)
    assert accelerate(keras_runtime, tmp_path) is keras_runtime
