"""The service's model input against the reference pipelines' own output, setting by
setting: Keras ``load_img`` + ``img_to_array`` (``ImageDataGenerator``'s
``flow_from_directory``), ``image_dataset_from_directory`` and ``tf.image.resize``,
``keras.applications``' input functions, and Pillow.

Tolerances: Pillow's resampling is the service's own, so Keras ``load_img`` matches
exactly. TensorFlow's resampling is rebuilt in NumPy (``common/resize.py``): within
0.02 of 255. TensorFlow decodes JPEGs with libjpeg's fast integer IDCT
(``tf.io.decode_image``'s default), Pillow with the accurate one: on JPEGs the two
differ by up to 5 of 255 (0 for PNG), so there the service matches
``image_dataset_from_directory`` within 5 of 255, and the model's labels are the same.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.preprocessing import PRESETS, Preprocessing, decode_for_model, preprocess
from common.resize import tf_resize
from common.settings import DEFAULT_MODEL_PATH
from tests.conftest import encoded, photo
from worker.runtime import load_runtime

SIZE = (128, 96)  # width, height: not square, so that aspect settings show


def exif_rotated_jpeg() -> bytes:
    """A photo whose EXIF orientation says to turn it: the references ignore it."""
    exif = Image.Exif()
    exif[0x0112] = 6
    image = Image.open(io.BytesIO(photo("Kardus", seed=5, size=(640, 480))))
    return encoded(image, "JPEG", exif=exif.tobytes(), quality=92)


PHOTOS = {
    "jpeg-1024x768": photo("Plastik", seed=1, size=(1024, 768)),
    "jpeg-portrait": photo("Logam", seed=2, size=(480, 800)),
    "jpeg-exif-rotated": exif_rotated_jpeg(),
    "png-rgba": encoded(
        Image.open(io.BytesIO(photo("Kaca", seed=3, size=(500, 300)))).convert("RGBA"), "PNG"
    ),
}


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("parity")
    paths = {}
    for name, data in PHOTOS.items():
        paths[name] = folder / f"{name}.{'png' if name.startswith('png') else 'jpg'}"
        paths[name].write_bytes(data)
    return paths


def like_load_img(resize: str, aspect: str = "stretch") -> Preprocessing:
    return Preprocessing(resize=resize, aspect=aspect, draft=False, exif_transpose=False)


@pytest.mark.parametrize("resize", ["nearest", "bilinear", "bicubic", "lanczos"])
@pytest.mark.parametrize("keep_aspect_ratio", [False, True])
def test_keras_load_img_is_matched_exactly(photo_files, resize, keep_aspect_ratio):
    from keras.utils import img_to_array, load_img

    spec = like_load_img(resize, "crop" if keep_aspect_ratio else "stretch")
    for name, path in photo_files.items():
        reference = img_to_array(load_img(path, target_size=SIZE[::-1], interpolation=resize,
                                          keep_aspect_ratio=keep_aspect_ratio))  # fmt: skip
        ours = decode_for_model(PHOTOS[name], SIZE, spec)
        assert np.array_equal(ours, reference), name


def test_the_flow_from_directory_preset_is_load_img_then_rescale(photo_files):
    from keras.utils import img_to_array, load_img

    for name, path in photo_files.items():
        reference = img_to_array(load_img(path, target_size=SIZE[::-1])) * np.float32(1 / 255)
        ours = preprocess(PHOTOS[name], SIZE, PRESETS["keras-flow-from-directory"])
        np.testing.assert_allclose(ours, reference, atol=1e-6, err_msg=name)


@pytest.mark.parametrize(
    ("resize", "antialias"),
    [("nearest", False), ("bilinear", False), ("bilinear", True), ("bicubic", False),
     ("bicubic", True), ("area", False)],
)  # fmt: skip
def test_tf_image_resize_is_matched_on_the_same_pixels(resize, antialias):
    import tensorflow as tf

    spec = Preprocessing(resize=resize, resize_backend="tensorflow", antialias=antialias,
                         draft=False, exif_transpose=False)  # fmt: skip
    for name, data in PHOTOS.items():
        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)
        reference = tf.image.resize(pixels, SIZE[::-1], method=resize, antialias=antialias)
        ours = decode_for_model(data, SIZE, spec)
        np.testing.assert_allclose(ours, reference.numpy(), atol=0.02, err_msg=name)


@pytest.mark.parametrize(
    ("aspect", "option"), [("stretch", {}), ("crop", {"crop_to_aspect_ratio": True}),
                           ("pad", {"pad_to_aspect_ratio": True})],
)  # fmt: skip
def test_image_dataset_from_directory_is_matched(tmp_path, aspect, option):
    import keras

    for label in ("a", "b"):  # two classes: the reader needs folders
        (tmp_path / label).mkdir()
    names = sorted(PHOTOS)
    for index, name in enumerate(names):
        suffix = "png" if name.startswith("png") else "jpg"
        (tmp_path / "ab"[index % 2] / f"{index}-{name}.{suffix}").write_bytes(PHOTOS[name])
    dataset = keras.utils.image_dataset_from_directory(
        tmp_path, image_size=SIZE[::-1], shuffle=False, batch_size=len(names), **option
    )
    images = next(iter(dataset))[0].numpy()
    spec = Preprocessing(**{**PRESETS["keras-image-dataset"].to_fields(), "aspect": aspect})
    files = sorted(p for p in tmp_path.rglob("*.*"))  # the reader's order: class, then name
    for path, reference in zip(files, images, strict=True):
        ours = preprocess(path.read_bytes(), SIZE, spec)
        # Exact but for TensorFlow's fast JPEG decoding (see the module's docstring).
        tolerance = 0.02 if path.suffix == ".png" else 5.0
        np.testing.assert_allclose(ours, reference, atol=tolerance, err_msg=path.name)
        assert demo_label(ours) == demo_label(reference), path.name


def demo_label(pixels: np.ndarray) -> int:
    """The demo model's label for 0-255 pixels of any size (resized to its input)."""
    batch = tf_resize(pixels, (128, 128), "bilinear")[None] / np.float32(255)
    return int(demo_runtime().predict(batch).argmax())


@functools.cache
def demo_runtime():
    return load_runtime(DEFAULT_MODEL_PATH)


@pytest.mark.parametrize(
    ("preset", "reference"),
    [("mobilenet-v2", "keras.applications.mobilenet_v2"),
     ("caffe", "keras.applications.resnet50")],
)  # fmt: skip
def test_keras_applications_input_functions_are_matched(preset, reference):
    import importlib

    preprocess_input = importlib.import_module(reference).preprocess_input
    spec = PRESETS[preset]
    for data in PHOTOS.values():
        pixels = decode_for_model(data, SIZE, spec)
        np.testing.assert_allclose(spec.values(pixels), preprocess_input(pixels.copy()),
                                   atol=1e-4)  # fmt: skip


def test_imagenet_normalisation_is_mean_and_std_after_scaling():
    pixels = decode_for_model(PHOTOS["png-rgba"], SIZE, PRESETS["imagenet"])
    expected = (pixels / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(PRESETS["imagenet"].values(pixels), expected, atol=1e-5)


def test_the_service_preset_is_what_it_always_did():
    """``ecosnap`` (models trained by ``ecosnap train``): draft decoding, upright photos,
    Pillow bilinear, 1/255 — the input every model of the seed was trained on."""
    data = PHOTOS["jpeg-exif-rotated"]
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", SIZE)
    from PIL import ImageOps

    reference = np.asarray(
        ImageOps.exif_transpose(image).convert("RGB").resize(SIZE, Image.Resampling.BILINEAR),
        dtype=np.float32,
    ) * np.float32(1 / 255)
    np.testing.assert_array_equal(preprocess(data, SIZE), reference)
