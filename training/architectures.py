"""The networks ``ecosnap train`` can build, all taking the serving input (scaled RGB)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

MOBILENET_ALPHA = 0.35


def _conv_block(filters: int, strides: int = 1) -> list:
    from keras import layers

    return [
        layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False),
        layers.BatchNormalization(momentum=0.9),
        layers.ReLU(),
    ]


def small_cnn(input_size: tuple[int, int], num_classes: int, scale: float):
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
        ],
        name="small_cnn",
    )


def mobilenet_v2(input_size: tuple[int, int], num_classes: int, scale: float):
    """MobileNetV2 (width 0.35) from scratch, with a new classification head.

    MobileNetV2 expects pixels in [-1, 1]; the first layer maps the serving scale
    ([0, 255 * scale]) there, so serving preprocessing stays the same for every
    architecture.
    """
    import keras
    from keras import layers

    width, height = input_size
    inputs = keras.Input(shape=(height, width, 3))
    backbone = keras.applications.MobileNetV2(
        input_shape=(height, width, 3),
        alpha=MOBILENET_ALPHA,
        include_top=False,
        weights=None,
        pooling="avg",
    )
    features = backbone(layers.Rescaling(2.0 / (255.0 * scale), offset=-1.0)(inputs))
    outputs = layers.Dense(num_classes, activation="softmax")(layers.Dropout(0.2)(features))
    return keras.Model(inputs, outputs, name="mobilenet_v2")


ARCHITECTURES: dict[str, Callable] = {"small_cnn": small_cnn, "mobilenet_v2": mobilenet_v2}


def build(architecture: str, input_size: tuple[int, int], num_classes: int, scale: float):
    """A fresh network of ``architecture``."""
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"Unknown architecture {architecture!r}; use one of {', '.join(ARCHITECTURES)}."
        )
    return ARCHITECTURES[architecture](input_size, num_classes, scale)


def load_initial_weights(model, path: Path) -> None:
    """Start from a local file: a model of the same architecture (.keras, .h5, .weights.h5).

    For MobileNetV2 a Keras Applications no-top file (ImageNet weights fetched
    beforehand, e.g. ``mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_128_no_top.h5``)
    is accepted too and goes into the backbone.
    """
    backbone = next((layer for layer in model.layers if layer.name.startswith("mobilenet")), None)
    try:
        try:
            model.load_weights(path)
        except ValueError:
            if backbone is None:
                raise
            backbone.load_weights(path)
    except ValueError as exc:
        raise ValueError(f"{path.name} holds no weights for this {model.name}: {exc}") from exc
