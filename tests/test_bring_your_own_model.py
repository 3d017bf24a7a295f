"""A notebook's model, from its bare file to the active version, with the documented
commands only (``ecosnap models add FILE --preset ... --upload API --activate``), and
served exactly as its training pipeline fed it.

Two bare files, as a notebook user brings them: a tf.keras 2 ``.h5`` (written by
tf-keras 2.21, ``tests/fixtures/legacy/``) and a ``.tflite`` from ``TFLiteConverter``
with its batch fixed at 1 and logits for outputs, made here from a small model. Both
were "trained" with ``ImageDataGenerator(rescale=1/255).flow_from_directory``: the
reference is Keras ``load_img`` (nearest) + ``img_to_array`` / 255, then the model
file itself in its own framework; the served probabilities must match it to 1e-4.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import requests

from cli.main import main
from common.labels import CLASSES
from common.model_metadata import ModelMetadata, metadata_path_for
from common.processes import wait_until
from tests.conftest import photo, run_stack

pytestmark = pytest.mark.slow

TIMEOUT = 180
ADMIN_KEY = "byo-admin-key-0123456789"
FIXTURES = Path(__file__).parent / "fixtures" / "legacy"
PHOTOS = [photo(label, seed=70 + i, size=(1024, 768)) for i, label in enumerate(CLASSES)]


@pytest.fixture(scope="module")
def byo_stack(redis_url, tmp_path_factory):
    yield from run_stack(
        redis_url.rsplit("/", 1)[0] + "/13",
        tmp_path_factory.mktemp("byo-stack"),
        {"ADMIN_API_KEY": ADMIN_KEY, "HEARTBEAT_INTERVAL_S": "1"},
    )


def bare_keras2_h5(folder: Path) -> Path:
    path = folder / "notebook_cnn.h5"
    shutil.copyfile(FIXTURES / "legacy_cnn.h5", path)  # the file alone, no metadata
    return path


def bare_fixed_batch_tflite(folder: Path) -> Path:
    """A small CNN converted by TFLiteConverter with its input fixed at 1x128x128x3 and
    no softmax at the end (logits), as many notebooks export it."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(7)
    inputs = keras.Input((128, 128, 3), batch_size=1)
    features = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    logits = keras.layers.Dense(len(CLASSES))(keras.layers.GlobalAveragePooling2D()(features))
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, logits))
    path = folder / "notebook.tflite"
    path.write_bytes(converter.convert())
    return path


def reference_probabilities(path: Path, images: list[Path]) -> np.ndarray:
    """The training pipeline's preprocessing, then the model file in its own framework."""
    from keras.utils import img_to_array, load_img

    metadata = ModelMetadata.for_model(path)
    width, height = metadata.input_size
    batch = np.stack(
        [img_to_array(load_img(image, target_size=(height, width))) / 255 for image in images]
    ).astype(np.float32)
    if path.suffix == ".h5":
        from worker.legacy_keras import load_keras_model

        return load_keras_model(path).predict(batch, verbose=0)
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(path))
    interpreter.allocate_tensors()
    rows = []
    for image in batch:  # the file's own batch of one
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0])
    logits = np.array(rows)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("make", [bare_keras2_h5, bare_fixed_batch_tflite])
def test_a_bare_notebook_model_goes_from_file_to_served_as_trained(
    byo_stack, tmp_path, monkeypatch, capsys, make
):
    path = make(tmp_path)
    assert not metadata_path_for(path).exists()
    # Without metadata every command says how to make it, in one line.
    assert main(["export", str(path), "--to", "onnx"]) == 2
    refused = capsys.readouterr().err
    assert "ecosnap models add" in refused and "Traceback" not in refused
    assert len(refused.strip().splitlines()) == 1

    version = f"notebook-{path.suffix[1:]}"
    monkeypatch.setenv("ADMIN_API_KEY", ADMIN_KEY)
    added = main(["models", "add", str(path), "--preset", "keras-flow-from-directory",
                  "--version", version, "--upload", byo_stack.base_url, "--activate"])  # fmt: skip
    assert added == 0
    metadata = ModelMetadata.for_model(path)
    assert metadata.preprocessing.resize == "nearest" and not metadata.preprocessing.draft
    if path.suffix == ".tflite":
        assert metadata.outputs == "logits" and metadata.input_size == (128, 128)
    wait_until(lambda: {w["model_version"] for w in byo_stack.live_workers()} == {version},
               TIMEOUT, f"the worker on {version}")  # fmt: skip
    (worker,) = byo_stack.live_workers()
    expected_batching = "resized" if path.suffix == ".tflite" else "dynamic"
    assert worker["batching"] == expected_batching
    info = requests.get(byo_stack.url("/model-info"), timeout=10).json()
    assert info["version"] == version and info["preprocessing"]["resize"] == "nearest"

    images = []
    for index, data in enumerate(PHOTOS):
        images.append(tmp_path / f"{index}.jpg")
        images[-1].write_bytes(data)
    expected = reference_probabilities(path, images)
    for data, row in zip(PHOTOS, expected, strict=True):
        answer = requests.post(byo_stack.url("/predict?wait=30"),
                               files={"file": ("p.jpg", data)}, timeout=60)  # fmt: skip
        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert result["model_version"] == version
        served = [result["probabilities"][name] for name in metadata.classes]
        np.testing.assert_allclose(served, row, atol=1e-4)
        assert result["label"] == metadata.classes[int(row.argmax())]
