"""Load ``.h5`` files written by Keras 2 (tf.keras, TensorFlow < 2.16) as Keras 3 models.

Keras 3 reads most Keras 2 HDF5 files, but not the ones notebooks most often made
(found with files saved by tf-keras 2.21, see ``tests/fixtures/legacy/``):

- every MobileNet: ``DepthwiseConv2D`` configs carry Keras 2's ``groups`` argument,
  which Keras 3 refuses;
- a model nested in a ``Sequential`` (the transfer-learning pattern): its
  ``BatchNormalization`` ``axis`` is stored as ``[3]`` and its ``input_layers`` /
  ``output_layers`` as ``[[name, 0, 0]]``, which Keras 3 reads as a list of outputs;
- augmentation layers carry ``rng_type``.

Rewriting those entries of the stored ``model_config`` (on a temporary copy) lets
Keras 3's own loader read the file, weights untouched, into an ordinary Keras 3
model, so exports and ONNX acceleration work as for any other model. Loading with
the ``tf-keras`` package instead would have required the full ``tensorflow`` wheel
beside ``tensorflow-cpu`` and a second export path for its models.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any


def is_keras2_h5(path: Path) -> bool:
    """An ``.h5`` model file whose ``keras_version`` attribute is not 3.x."""
    import h5py

    if path.suffix.lower() != ".h5":
        return False
    with h5py.File(path, "r") as file:
        version = file.attrs.get("keras_version", "")
    return not (version.decode() if isinstance(version, bytes) else str(version)).startswith("3.")


def upgrade_config(node: Any) -> None:
    """Rewrite Keras 2 layer configs for Keras 3, at every nesting level, in place."""
    if isinstance(node, list):
        for item in node:
            upgrade_config(item)
        return
    if not isinstance(node, dict):
        return
    config = node.get("config")
    if isinstance(config, dict) and "class_name" in node:
        if node["class_name"] == "DepthwiseConv2D":
            config.pop("groups", None)
        if node["class_name"].startswith("Random"):
            config.pop("rng_type", None)
        for key in ("input_layers", "output_layers"):
            value = config.get(key)
            if isinstance(value, list) and len(value) == 1 and isinstance(value[0], list):
                config[key] = value[0]
        axis = config.get("axis")
        if isinstance(axis, list) and len(axis) == 1:
            config["axis"] = axis[0]
    for value in node.values():
        upgrade_config(value)


def load_keras_model(path: Path):
    """Any ``.keras`` or ``.h5`` model as an uncompiled Keras 3 model.

    Always in Keras's safe mode, said explicitly rather than left to the default: a
    model uploaded by anyone must not run code of its own while it loads (a
    ``Lambda`` layer's Python function is refused).
    """
    import h5py
    import keras

    if not is_keras2_h5(path):
        return keras.models.load_model(path, compile=False, safe_mode=True)
    with tempfile.TemporaryDirectory() as workdir:
        copy = Path(workdir) / "model.h5"
        shutil.copyfile(path, copy)
        with h5py.File(copy, "r+") as file:
            config = json.loads(file.attrs["model_config"])
            upgrade_config(config)
            file.attrs["model_config"] = json.dumps(config)
        return keras.models.load_model(copy, compile=False, safe_mode=True)
