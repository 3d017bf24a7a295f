"""The training command on a tiny synthetic dataset, and the runtime it feeds."""

import numpy as np
import pytest

from cli.main import main
from common.labels import CLASSES
from common.model_metadata import ModelMetadata, file_sha256
from common.preprocessing import preprocess
from tests.conftest import photo
from training.dataset import find_images
from training.synthetic import write_dataset
from worker.runtime import load_runtime


def test_dataset_folders_may_use_english_names(tmp_path):
    write_dataset(tmp_path, per_class=1, folder_names={"Kaca": "glass", "Residu": "TRASH"})
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.jpg").write_bytes(b"x")
    labels = sorted(label for _, label in find_images(tmp_path))
    assert labels == sorted(CLASSES)


def test_synthetic_photos_are_reproducible(tmp_path):
    write_dataset(tmp_path / "a", per_class=2, seed=3)
    write_dataset(tmp_path / "b", per_class=2, seed=3)
    first = sorted(p.read_bytes() for p in (tmp_path / "a").rglob("*.jpg"))
    second = sorted(p.read_bytes() for p in (tmp_path / "b").rglob("*.jpg"))
    assert first == second and len(first) == 12


@pytest.mark.slow
def test_train_command_writes_a_model_that_serves(tmp_path):
    data, output = tmp_path / "data", tmp_path / "model" / "tiny.h5"
    assert main(["demo-data", str(data), "--per-class", "8", "--seed", "5"]) == 0
    assert (
        main(["train", str(data), "--output", str(output), "--epochs", "1", "--version", "tiny-1"])
        == 0
    )
    metadata = ModelMetadata.for_model(output)
    assert metadata.version == "tiny-1"
    assert metadata.description.startswith("Small CNN trained by `ecosnap train` on data")
    assert metadata.sha256 == file_sha256(output)
    assert metadata.classes == CLASSES and metadata.input_size == (128, 128)

    runtime = load_runtime(output)
    batch = np.stack(
        [preprocess(photo(seed=s), metadata.input_size, metadata.scale) for s in range(3)]
    )
    probabilities = runtime.predict(batch)
    assert probabilities.shape == (3, len(CLASSES))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
