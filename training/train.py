"""Train a model, keras.io style: load, split, augment, build, fit, test, save, report.

Preprocessing is ``common.preprocessing.preprocess`` (the serving function), applied
once when the data is loaded; augmentation happens on top of it, in the input
pipeline, and only for training batches, so the saved model holds no random layers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from common.datasets import ZipLimits
from common.labels import CLASSES
from common.model_metadata import DEFAULT_INPUT_SIZE, ModelMetadata, file_sha256
from common.preprocessing import PRESETS
from common.reports import metrics
from training.architectures import build, load_initial_weights
from training.dataset import assign_splits, load
from training.report import write_report

AUGMENTATION = ("flip", "rotation 0.1", "zoom 0.1", "brightness 0.1", "contrast 0.1")


def augmentation(scale: float, seed: int):
    """Random flips, rotations, zooms, brightness and contrast, as Keras layers."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            layers.RandomFlip("horizontal_and_vertical", seed=seed),
            layers.RandomRotation(0.1, seed=seed + 1),
            layers.RandomZoom(0.1, seed=seed + 2),
            layers.RandomBrightness(0.1, value_range=(0.0, 255.0 * scale), seed=seed + 3),
            layers.RandomContrast(0.1, seed=seed + 4),
        ],
        name="augmentation",
    )


def balanced_class_weights(labels: np.ndarray) -> dict[int, float]:
    """``n / (classes * count)`` per class present, 1.0 for the absent ones."""
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    by_class = dict.fromkeys(range(len(CLASSES)), 1.0)
    by_class.update({int(c): round(float(w), 4) for c, w in zip(present, weights, strict=True)})
    return by_class


def train(
    data: str,
    output: Path,
    version: str,
    architecture: str = "small_cnn",
    epochs: int = 30,
    batch_size: int = 32,
    patience: int = 5,
    seed: int = 0,
    weights: Path | None = None,
    augment: bool = True,
    description: str | None = None,
    limits: ZipLimits | None = None,
) -> ModelMetadata:
    """Train on ``data`` and write ``output`` (.h5), its ``.keras`` twin, metadata and report."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    # The service's own preprocessing, written into the model's metadata below.
    size, spec = DEFAULT_INPUT_SIZE, PRESETS["ecosnap"]
    scale = spec.scale
    dataset = load(data, size, spec, limits)
    splits, stratified = assign_splits(dataset.labels, dataset.given_splits, seed)
    x = {name: dataset.images[idx] for name, idx in splits.items()}
    y = {name: dataset.labels[idx] for name, idx in splits.items()}

    train_batches = (
        tf.data.Dataset.from_tensor_slices((x["train"], y["train"]))
        .shuffle(len(y["train"]), seed=seed)
        .batch(batch_size)
    )
    if augment:
        augment_layers = augmentation(scale, seed)
        train_batches = train_batches.map(
            lambda images, labels: (augment_layers(images, training=True), labels)
        )
    train_batches = train_batches.prefetch(tf.data.AUTOTUNE)

    model = build(architecture, size, len(CLASSES), scale)
    if weights is not None:
        load_initial_weights(model, weights)
    steps = epochs * -(-len(y["train"]) // batch_size)
    model.compile(
        # Cosine decay ends at a small learning rate, so the last epochs are calm.
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, steps)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    class_weights = balanced_class_weights(y["train"])
    history = model.fit(
        train_batches,
        validation_data=(x["val"], y["val"]),
        epochs=epochs,
        class_weight=class_weights,
        callbacks=[
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=patience, restore_best_weights=True
            )
        ],
        # A live progress bar on a terminal, one line per epoch in logs.
        verbose=1 if sys.stdout.isatty() else 2,
    )

    predicted = model.predict(x["test"], batch_size=batch_size, verbose=0).argmax(axis=1)
    test_metrics = metrics(y["test"].tolist(), predicted.tolist())
    # The weights kept are those of the lowest validation loss (early stopping).
    best_epoch = int(np.argmin(history.history["val_loss"]))
    val_accuracy = float(history.history["val_accuracy"][best_epoch])

    output.parent.mkdir(parents=True, exist_ok=True)
    extra = {
        "architecture": architecture,
        "data": dataset.name,
        "data_fingerprint": dataset.fingerprint,
        "split_sizes": {name: len(idx) for name, idx in splits.items()},
        "stratified": stratified,
        "skipped": dict(sorted(dataset.skipped.items())),
        "seed": seed,
        "epochs": epochs,
        "epochs_run": len(history.history["loss"]),
        "best_epoch": best_epoch + 1,
        "augmentation": list(AUGMENTATION) if augment else [],
        "class_weights": {CLASSES[c]: w for c, w in class_weights.items()},
        "initial_weights": weights.name if weights else None,
        "validation_accuracy": round(val_accuracy * 100, 1),
        "test_metrics": {
            key: test_metrics[key] for key in ("accuracy", "precision", "recall", "f1_score")
        }
        | {"average": "macro", "images": len(y["test"])},
    }
    description = description or (
        f"{architecture} trained by `ecosnap train` on {dataset.name} "
        f"({len(dataset.labels)} images)."
    )
    # The served files carry the weights alone: no optimizer state (two thirds of
    # the size) and nothing a worker could not load without training code.
    served = build(architecture, size, len(CLASSES), scale)
    served.set_weights(model.get_weights())
    written = []
    for path in (output, output.with_suffix(".keras")):
        served.save(path)
        written.append(
            ModelMetadata(
                version=version,
                description=description,
                file=path.name,
                sha256=file_sha256(path),
                format=path.suffix.lstrip("."),
                preprocessing=spec,
                extra=extra,
            )
        )
        written[-1].write_for(path)
    write_report(report_dir_for(output), history.history, test_metrics, extra)
    return written[0]


def report_dir_for(model_path: Path) -> Path:
    """``models/x.h5`` -> ``models/x-report/``."""
    return model_path.with_name(f"{model_path.stem}-report")
