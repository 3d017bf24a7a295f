"""Train the demo CNN, keras.io style: load, split, build, fit, evaluate, save.

Preprocessing is ``common.preprocessing.preprocess`` (the serving function), so the
model sees exactly what the worker will feed it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from common.labels import CLASSES
from common.model_metadata import DEFAULT_INPUT_SIZE, DEFAULT_SCALE, ModelMetadata, file_sha256
from training.dataset import load_arrays


def _conv_block(filters: int, strides: int = 1) -> list:
    from keras import layers

    return [
        layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False),
        layers.BatchNormalization(momentum=0.9),
        layers.ReLU(),
    ]


def build_small_cnn(input_size: tuple[int, int], num_classes: int):
    """A small CNN in the spirit of the seed's; a few hundred kilobytes on disk."""
    import keras
    from keras import layers

    width, height = input_size
    return keras.Sequential(
        [
            keras.Input(shape=(height, width, 3)),
            *_conv_block(16, strides=2),
            *_conv_block(32),
            layers.MaxPooling2D(),
            *_conv_block(64),
            layers.MaxPooling2D(),
            *_conv_block(96),
            layers.MaxPooling2D(),
            *_conv_block(128),
            layers.GlobalAveragePooling2D(),
            layers.Dropout(0.2),
            layers.Dense(num_classes, activation="softmax"),
        ]
    )


def _split(count: int, seed: int, validation_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(count)
    cut = int(count * (1 - validation_fraction))
    return order[:cut], order[cut:]


def train(
    data_dir: Path,
    output: Path,
    epochs: int = 12,
    batch_size: int = 32,
    seed: int = 0,
    version: str | None = None,
    description: str | None = None,
) -> ModelMetadata:
    """Train on ``data_dir`` (class folders) and write ``output`` (.h5) plus its metadata."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()

    images, labels = load_arrays(data_dir, DEFAULT_INPUT_SIZE, DEFAULT_SCALE)
    train_idx, val_idx = _split(len(images), seed, validation_fraction=0.2)

    model = build_small_cnn(DEFAULT_INPUT_SIZE, len(CLASSES))
    steps_per_epoch = -(-len(train_idx) // batch_size)
    # Cosine decay ends training at a small learning rate, so the last epoch's
    # weights are a stable choice rather than one point of a noisy curve.
    learning_rate = keras.optimizers.schedules.CosineDecay(1e-3, epochs * steps_per_epoch)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(
        images[train_idx],
        labels[train_idx],
        validation_data=(images[val_idx], labels[val_idx]),
        epochs=epochs,
        batch_size=batch_size,
        verbose=2,
    )
    _, val_accuracy = model.evaluate(images[val_idx], labels[val_idx], verbose=0)

    output.parent.mkdir(parents=True, exist_ok=True)
    model.save(output)
    metadata = ModelMetadata(
        version=version or time.strftime("%Y%m%d-%H%M%S"),
        description=description
        or f"Small CNN trained by `ecosnap train` on {data_dir.name} ({len(images)} images).",
        file=output.name,
        sha256=file_sha256(output),
        extra={
            "validation_accuracy": round(float(val_accuracy) * 100, 1),
            "training_images": len(train_idx),
            "validation_images": len(val_idx),
            "epochs": epochs,
            "seed": seed,
        },
    )
    metadata.write_for(output)
    return metadata
