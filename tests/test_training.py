"""Training data sources and splits, and the train command end to end on tiny data."""

import io
import json
import socket
import zipfile

import numpy as np
import pytest
from PIL import Image

from cli.main import main
from common.datasets import DatasetError, ZipLimits
from common.labels import CLASSES
from common.model_metadata import ModelMetadata, file_sha256
from common.preprocessing import PRESETS, preprocess
from tests.conftest import photo
from training.dataset import assign_splits, load, open_source
from training.synthetic import write_dataset
from training.train import balanced_class_weights
from worker.runtime import load_runtime
from worker.validation import check_runtime

SIZE, SPEC = (128, 128), PRESETS["ecosnap"]
ZIP_LIMITS = ZipLimits()


def zip_of(folder, extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*.jpg")):
            archive.writestr(f"dataset-resized/{path.relative_to(folder).as_posix()}",
                             path.read_bytes())  # fmt: skip
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_folders_zips_and_aliases_read_alike(tmp_path):
    write_dataset(tmp_path / "data", per_class=2, folder_names={"Kaca": "glass", "Residu": "TRASH"})
    (tmp_path / "data.zip").write_bytes(
        zip_of(tmp_path / "data", {"notes/readme.jpg": photo(), "x/.DS_Store": b"\0"})
    )
    from_folder = load(str(tmp_path / "data"), SIZE, SPEC)
    from_zip = load(str(tmp_path / "data.zip"), SIZE, SPEC)
    assert sorted(from_folder.labels.tolist()) == sorted(list(range(len(CLASSES))) * 2)
    assert from_zip.fingerprint == from_folder.fingerprint
    np.testing.assert_array_equal(np.sort(from_zip.labels), np.sort(from_folder.labels))
    assert from_zip.skipped == {"no_class_folder": 1, "system_file": 1}
    assert from_zip.name == "data.zip"


def test_the_fingerprint_names_the_content(tmp_path):
    write_dataset(tmp_path / "a", per_class=1, seed=1)
    before = load(str(tmp_path / "a"), SIZE, SPEC).fingerprint
    first = sorted((tmp_path / "a").rglob("*.jpg"))[0]
    first.rename(first.with_name("renamed.jpg"))
    assert load(str(tmp_path / "a"), SIZE, SPEC).fingerprint == before
    Image.new("RGB", (64, 64), (9, 9, 9)).save(first.with_name("renamed.jpg"))
    assert load(str(tmp_path / "a"), SIZE, SPEC).fingerprint != before


def test_the_split_follows_the_images_not_their_names_or_order(tmp_path):
    write_dataset(tmp_path / "a", per_class=5, seed=2)
    folder = load(str(tmp_path / "a"), SIZE, SPEC)
    renamed = tmp_path / "b"
    for path in sorted((tmp_path / "a").rglob("*.jpg")):
        target = renamed / path.parent.name / f"z{path.stem[::-1]}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    other = load(str(renamed), SIZE, SPEC)
    np.testing.assert_array_equal(folder.images, other.images)
    first, _ = assign_splits(folder.labels, folder.given_splits, seed=3)
    second, _ = assign_splits(other.labels, other.given_splits, seed=3)
    assert all(np.array_equal(first[name], second[name]) for name in first)


def test_unreadable_images_are_counted_not_fatal(tmp_path):
    write_dataset(tmp_path, per_class=1)
    (tmp_path / "Kaca" / "broken.jpg").write_bytes(photo()[:500])
    loaded = load(str(tmp_path), SIZE, SPEC)
    assert len(loaded.labels) == len(CLASSES) and loaded.skipped["unreadable_image"] == 1
    # A damaged zip member (its bytes no longer match its CRC) counts the same way.
    image = photo("Logam", seed=9)
    data = bytearray(zip_of(tmp_path, {"Logam/damaged.jpg": image}))
    data[data.index(image[-200:])] ^= 0xFF
    (tmp_path / "damaged.zip").write_bytes(bytes(data))
    from_zip = load(str(tmp_path / "damaged.zip"), SIZE, SPEC)
    assert from_zip.skipped["unreadable_image"] == 2 and len(from_zip.labels) == len(CLASSES)


def test_missing_and_unlabelled_sources_are_refused(tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        load(str(tmp_path / "nope"), SIZE, SPEC)
    (tmp_path / "bottles").mkdir()
    (tmp_path / "bottles" / "a.jpg").write_bytes(photo())
    with pytest.raises(DatasetError) as refused:
        load(str(tmp_path), SIZE, SPEC)
    assert refused.value.code == "no_matching_classes" and "bottles" in refused.value.message
    (tmp_path / "plain.zip").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="neither a folder nor a zip"):
        load(str(tmp_path / "plain.zip"), SIZE, SPEC)


def test_an_unsplit_dataset_is_cut_80_20_then_80_20_stratified():
    labels = np.repeat(np.arange(len(CLASSES)), 50)
    splits, stratified = assign_splits(labels, [None] * len(labels), seed=7)
    assert stratified
    assert {name: len(idx) for name, idx in splits.items()} == {"train": 192, "val": 48, "test": 60}
    for name, count in (("train", 32), ("val", 8), ("test", 10)):
        assert np.bincount(labels[splits[name]]).tolist() == [count] * len(CLASSES)
    assert len(np.unique(np.concatenate(list(splits.values())))) == len(labels)
    again, _ = assign_splits(labels, [None] * len(labels), seed=7)
    other, _ = assign_splits(labels, [None] * len(labels), seed=8)
    assert all(np.array_equal(splits[n], again[n]) for n in splits)
    assert not np.array_equal(splits["test"], other["test"])


def test_splits_in_the_data_are_kept():
    labels = np.repeat(np.arange(len(CLASSES)), 10)
    given = ["train"] * 30 + ["test"] * 30
    splits, _ = assign_splits(labels, given, seed=0)
    np.testing.assert_array_equal(splits["test"], np.arange(30, 60))
    assert len(splits["val"]) == 6 and set(splits["val"]) < set(range(30))
    all_three = ["train"] * 20 + ["val"] * 20 + ["test"] * 20
    kept, _ = assign_splits(labels, all_three, seed=0)
    np.testing.assert_array_equal(kept["val"], np.arange(20, 40))
    with pytest.raises(DatasetError) as too_few:
        assign_splits(np.array([0]), [None], seed=0)
    assert too_few.value.code == "too_few_images"


def test_class_weights_balance_rare_classes():
    weights = balanced_class_weights(np.array([0] * 30 + [1] * 10))
    assert weights[0] == pytest.approx(40 / (2 * 30), abs=1e-4) and weights[1] == 2.0
    assert weights[5] == 1.0 and len(weights) == len(CLASSES)


def kaggle_cache(root, owner: str, dataset: str, version: int):
    """A kagglehub cache holding one downloaded dataset, in kagglehub's own layout."""
    folder = root / "datasets" / owner / dataset / "versions" / str(version)
    write_dataset(folder / "garbage" / "train", per_class=1, folder_names={"Kertas": "paper"})
    (root / "datasets" / owner / dataset / f"{version}.complete").touch()


@pytest.fixture
def offline(monkeypatch):
    """No name resolves: any attempt to reach Kaggle fails at once."""

    def refuse(*_, **__):
        raise socket.gaierror("network disabled in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_a_cached_kaggle_dataset_loads_offline(tmp_path, monkeypatch, offline):
    kaggle_cache(tmp_path, "alice", "waste", 3)
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path))
    catalog, _, name = open_source("kaggle:alice/waste/versions/3", ZIP_LIMITS)
    assert name == "kaggle:alice/waste/versions/3"
    assert sorted(label for _, label in catalog.by_split["train"]) == list(range(len(CLASSES)))


def test_an_unreachable_kaggle_dataset_is_a_clear_error(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path))
    with pytest.raises(DatasetError) as refused:
        open_source("kaggle:alice/waste", ZIP_LIMITS)
    assert refused.value.code == "kaggle_unavailable"
    assert main(["train", "kaggle:not a handle"]) == 2


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--weights", "nope.keras"], "no such file"),
        (["--version", "../x"], "--version"),
        (["--output", "model.keras"], "--output must name the .h5 file"),
    ],
)
def test_bad_train_arguments_are_clear_errors(tmp_path, capsys, arguments, message):
    assert main(["train", str(tmp_path), *arguments]) == 2
    assert message in capsys.readouterr().err


def test_a_zero_epoch_count_is_refused_by_the_parser(tmp_path):
    with pytest.raises(SystemExit):
        main(["train", str(tmp_path), "--epochs", "0"])


def train_tiny(tmp_path, *extra: str) -> ModelMetadata:
    output = tmp_path / "model" / "tiny.h5"
    args = ["train", str(tmp_path / "data.zip"), "--output", str(output), "--epochs", "2"]
    assert main([*args, "--version", "tiny-1", *extra]) == 0
    return ModelMetadata.for_model(output)


@pytest.fixture
def tiny_zip(tmp_path):
    write_dataset(tmp_path / "data", per_class=12, seed=5)
    (tmp_path / "data.zip").write_bytes(zip_of(tmp_path / "data"))


@pytest.mark.slow
def test_train_writes_both_formats_metadata_and_a_report(tmp_path, tiny_zip):
    metadata = train_tiny(tmp_path)
    model_dir = tmp_path / "model"
    keras_metadata = ModelMetadata.for_model(model_dir / "tiny.keras")
    assert metadata.version == keras_metadata.version == "tiny-1"
    assert (metadata.format, keras_metadata.format) == ("h5", "keras")
    assert metadata.sha256 == file_sha256(model_dir / "tiny.h5")
    assert metadata.classes == CLASSES and metadata.input_size == SIZE
    extra = metadata.extra
    assert extra["split_sizes"] == {"train": 45, "val": 12, "test": 15}
    assert extra["data"] == "data.zip" and len(extra["data_fingerprint"]) == 64
    assert extra["test_metrics"]["images"] == 15 and extra["test_metrics"]["average"] == "macro"
    assert extra["augmentation"] and extra["epochs_run"] <= 2
    report = json.loads((model_dir / "tiny-report" / "report.json").read_text())
    assert len(report["history"]["loss"]) == extra["epochs_run"]
    assert report["test_metrics"]["confusion_matrix"]["labels"] == list(CLASSES)
    for picture in ("curves.png", "confusion.png"):
        assert Image.open(model_dir / "tiny-report" / picture).format == "PNG"

    batch = np.stack([preprocess(photo(seed=s), SIZE, SPEC) for s in range(3)])
    h5, keras_file = load_runtime(model_dir / "tiny.h5"), load_runtime(model_dir / "tiny.keras")
    np.testing.assert_allclose(h5.predict(batch), keras_file.predict(batch), atol=1e-6)
    assert check_runtime(h5)["classes"] == len(CLASSES)


@pytest.mark.slow
def test_mobilenet_v2_trains_from_a_local_weights_file(tmp_path, tiny_zip):
    first = train_tiny(tmp_path, "--architecture", "mobilenet_v2", "--no-augment")
    assert first.extra["architecture"] == "mobilenet_v2" and first.extra["augmentation"] == []
    weights = tmp_path / "start.keras"
    (tmp_path / "model" / "tiny.keras").rename(weights)
    second = train_tiny(tmp_path, "--architecture", "mobilenet_v2", "--weights", str(weights))
    assert second.extra["initial_weights"] == "start.keras"
    runtime = load_runtime(tmp_path / "model" / "tiny.h5")
    assert check_runtime(runtime)["input_shape"] == [128, 128, 3]
