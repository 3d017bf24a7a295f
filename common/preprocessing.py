"""Image checks and the one preprocessing function shared by training, evaluation and
serving.

How a photo becomes a model's input belongs to the model: its metadata carries a
``Preprocessing`` (resize method and library, aspect ratio, JPEG draft decoding, EXIF
orientation, channel order, value transform), so a model trained in a notebook sees
the pixels it was trained on. ``PRESETS`` name the usual pipelines; models trained by
``ecosnap train`` use ``ecosnap``, the service's own.

With draft decoding (``ecosnap``), libjpeg scales by 1/2, 1/4 or 1/8 while decoding,
so a 12-megapixel phone photo is decoded at roughly the model's size instead of in
full. PNG and WebP have no such mode: they are decoded whole, so what an image may
cost is bounded by its decoded size (pixels x bands x bytes per sample, read from its
header before any pixel is decoded), and a worker's decoding threads share a memory
budget.
"""

from __future__ import annotations

import io
import math
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from common.errors import Refusal
from common.resize import TF_METHODS, tf_resize
from common.settings import Settings

ALLOWED_FORMATS: dict[str, str] = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
FILE_EXTENSIONS: dict[str, str] = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


MB = 1024 * 1024
PILLOW_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}
RESIZE_METHODS = {"pillow": tuple(PILLOW_RESAMPLING), "tensorflow": TF_METHODS}
ASPECTS = ("stretch", "crop", "pad")
# PNG colour types and their samples per pixel.
PNG_BANDS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


class ImageRejected(Refusal):
    """An image the service will not classify."""


class PreprocessingError(Refusal):
    """A model's preprocessing settings the service cannot follow."""

    def __init__(self, message: str) -> None:
        super().__init__("invalid_metadata", f"preprocessing: {message}")


@dataclass(frozen=True)
class Preprocessing:
    """How a model expects a photo turned into its input, and which library's
    resizing it was trained with.

    - ``resize``: ``nearest``, ``bilinear``, ``bicubic``, ``area`` or (Pillow only)
      ``lanczos``; ``resize_backend``: ``pillow`` (what Keras ``load_img`` and
      ``ImageDataGenerator.flow_from_directory`` use: Pillow widens its filters when
      it shrinks, i.e. always antialiases, except ``nearest``) or ``tensorflow``
      (``tf.image.resize``, ``image_dataset_from_directory``, ``smart_resize``:
      ``antialias`` as given, false by default);
    - ``aspect``: ``stretch`` to the input size, ``crop`` the largest centred box of
      the input's aspect ratio first (``smart_resize``, ``crop_to_aspect_ratio``,
      ``load_img(keep_aspect_ratio=True)``), or ``pad``: scale to fit and centre it
      in black borders (``tf.image.resize_with_pad``, which
      ``image_dataset_from_directory(pad_to_aspect_ratio=True)`` uses);
    - ``draft``: JPEGs may be decoded at reduced scale (fast; other pixels than a
      full decode); ``exif_transpose``: turn a photo upright by its EXIF orientation
      first (``load_img`` and ``tf.io.decode_image`` do not);
    - ``channels``: ``rgb`` or ``bgr``; then each value ``v`` (0-255) becomes
      ``v * scale + offset`` and, when ``mean`` and ``std`` are given (per channel,
      in the model's channel order), ``(that - mean) / std``.
    """

    resize: str = "bilinear"
    resize_backend: str = "pillow"
    antialias: bool = False
    aspect: str = "stretch"
    draft: bool = True
    exif_transpose: bool = True
    channels: str = "rgb"
    scale: float = 1 / 255
    offset: float = 0.0
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.resize_backend not in RESIZE_METHODS:
            raise PreprocessingError(f"resize_backend is one of {', '.join(RESIZE_METHODS)}.")
        if self.resize not in RESIZE_METHODS[self.resize_backend]:
            raise PreprocessingError(
                f"{self.resize_backend} resizes with "
                f"{', '.join(RESIZE_METHODS[self.resize_backend])}, not {self.resize!r}."
            )
        if self.aspect not in ASPECTS:
            raise PreprocessingError(f"aspect is one of {', '.join(ASPECTS)}.")
        if self.channels not in ("rgb", "bgr"):
            raise PreprocessingError("channels is rgb or bgr.")
        if (self.mean is None) != (self.std is None):
            raise PreprocessingError("mean and std come together.")
        if self.std is not None and not all(value > 0 for value in self.std):
            raise PreprocessingError("std values are positive.")
        if self.scale <= 0:
            raise PreprocessingError("scale is positive.")

    @classmethod
    def from_fields(cls, raw: Any) -> Preprocessing:
        """Settings as a metadata file or an upload gives them, each field checked."""
        if not isinstance(raw, dict):
            raise PreprocessingError("it must be a JSON object.")
        if "preset" in raw:
            preset = raw["preset"]
            if not isinstance(preset, str) or preset not in PRESETS:
                raise PreprocessingError(f"preset is one of {', '.join(PRESETS)}.")
            base, raw = PRESETS[preset], {k: v for k, v in raw.items() if k != "preset"}
        else:
            base = cls()
        known = {field.name: field.type for field in fields(cls)}
        if unknown := sorted(raw.keys() - known.keys()):
            raise PreprocessingError(f"unknown setting {', '.join(unknown)}.")
        values: dict[str, Any] = {}
        for name, value in raw.items():
            default = getattr(base, name)
            if name in ("mean", "std"):
                if value is not None and not (
                    isinstance(value, list) and len(value) == 3
                    and all(_is_number(v) for v in value)
                ):  # fmt: skip
                    raise PreprocessingError(f"{name} is a list of 3 numbers, or null.")
                values[name] = tuple(float(v) for v in value) if value is not None else None
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    raise PreprocessingError(f"{name} is true or false.")
                values[name] = value
            elif isinstance(default, float):
                if not _is_number(value):
                    raise PreprocessingError(f"{name} is a number.")
                values[name] = float(value)
            elif not isinstance(value, str):
                raise PreprocessingError(f"{name} is a string.")
            else:
                values[name] = value
        return replace(base, **values)

    def to_fields(self) -> dict[str, Any]:
        return {field.name: _listed(getattr(self, field.name)) for field in fields(self)}

    def values(self, pixels: np.ndarray) -> np.ndarray:
        """Resized RGB pixels (0-255, float32) as the model takes them."""
        if self.channels == "bgr":
            pixels = pixels[..., ::-1]
        values = pixels * np.float32(self.scale) + np.float32(self.offset)
        if self.mean is not None and self.std is not None:
            values = (values - np.float32(self.mean)) / np.float32(self.std)
        return values.astype(np.float32, copy=False)


def _is_number(value: Any) -> bool:
    """A finite JSON number (Python's JSON reader takes ``NaN`` and ``Infinity``)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _listed(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# The pipelines models are usually trained with, by name.
PRESETS: dict[str, Preprocessing] = {
    # The service's own (``ecosnap train``): fast JPEG decoding, upright photos.
    "ecosnap": Preprocessing(),
    # ImageDataGenerator(rescale=1/255).flow_from_directory(target_size=...):
    # keras.utils.load_img with its default nearest resize, no EXIF rotation.
    "keras-flow-from-directory": Preprocessing(resize="nearest", draft=False, exif_transpose=False),
    # keras.utils.image_dataset_from_directory(image_size=...): tf.image.resize,
    # bilinear, values 0-255 (a Rescaling layer inside the model scales them).
    "keras-image-dataset": Preprocessing(
        resize_backend="tensorflow", draft=False, exif_transpose=False, scale=1.0
    ),
    # The same pipeline with keras.applications.mobilenet_v2.preprocess_input: [-1, 1].
    "mobilenet-v2": Preprocessing(
        resize_backend="tensorflow",
        draft=False,
        exif_transpose=False,
        scale=1 / 127.5,
        offset=-1.0,
    ),
    # torchvision-style ImageNet normalisation: Pillow bilinear, mean and std.
    "imagenet": Preprocessing(
        draft=False, exif_transpose=False, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
    ),
    # keras.applications' "caffe" mode (ResNet50, VGG): BGR, ImageNet means subtracted.
    "caffe": Preprocessing(
        resize_backend="tensorflow",
        draft=False,
        exif_transpose=False,
        channels="bgr",
        scale=1.0,
        mean=(103.939, 116.779, 123.68),
        std=(1.0, 1.0, 1.0),
    ),
}


class DecodeBudget:
    """Memory that the decoding threads of one process may hold at once.

    A thread decoding an image holds what the image will take until its model input
    is made; a thread whose image does not fit waits for others to finish. Eight
    large PNGs at once therefore cost a worker its budget, not eight times their size.
    """

    def __init__(self, total_bytes: int) -> None:
        self.total = total_bytes
        self._free = total_bytes
        self._changed = threading.Condition()

    @contextmanager
    def held(self, amount: int) -> Iterator[None]:
        amount = min(amount, self.total)
        with self._changed:
            self._changed.wait_for(lambda: self._free >= amount)
            self._free -= amount
        try:
            yield
        finally:
            with self._changed:
                self._free += amount
                self._changed.notify_all()


@dataclass(frozen=True)
class ImageLimits:
    """How large an image may be: its pixels, and its memory once decoded; and the
    budget the decoding threads share (None: no sharing, as in training)."""

    max_pixels: int = 50_000_000
    max_decoded_bytes: int = 100 * MB
    budget: DecodeBudget | None = None

    @classmethod
    def from_settings(cls, settings: Settings, budget: DecodeBudget | None = None) -> ImageLimits:
        return cls(settings.max_image_pixels, settings.max_decoded_bytes, budget)


DEFAULT_LIMITS = ImageLimits()


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Identify ``data`` as a JPEG, PNG or WebP of bounded size, without decoding pixels."""
    if not data:
        raise ImageRejected("empty_file", "The uploaded file is empty.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected("image_too_large", str(exc)) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(
            "unsupported_media_type",
            "The file is not a JPEG, PNG or WebP image.",
        ) from exc
    if image.format not in ALLOWED_FORMATS:
        raise ImageRejected(
            "unsupported_media_type",
            f"{image.format} images are not supported; send JPEG, PNG or WebP.",
        )
    width, height = image.size
    if width * height > max_pixels:
        raise ImageRejected(
            "image_too_large",
            f"The image has {width}x{height} pixels; the limit is {max_pixels} pixels.",
        )
    return image


@dataclass(frozen=True)
class VerifiedImage:
    """A photo's format, and its bytes up to its format's end (anything appended after
    the image, such as an HTML page, is cut off)."""

    format: str
    data: bytes


def verify_image(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> VerifiedImage:
    """A photo whose header and end are intact and whose decoded size is within the
    limits; no pixel is decoded.

    Truncation, the usual damage of an upload, is caught here by the file's own end
    marker. Damage inside the compressed data is found where the image is decoded
    for the model: that job fails with ``corrupt_image``. A decode here would cost
    the API about as much CPU as everything else it does for a photo. A JPEG's size
    is counted at the most libjpeg reduces while decoding (1/8): the worker, which
    knows the model's input, checks it exactly.
    """
    image = open_image(data, limits.max_pixels)
    end = _image_end(data, image)
    if end is None:
        raise ImageRejected(
            "corrupt_image", f"The {image.format} file is truncated: its end is missing."
        )
    image.draft("RGB", (1, 1))  # a JPEG at its smallest decode; nothing else changes
    check_decoded_size(data, image, limits)
    return VerifiedImage(image.format, data[:end])


def decoded_bytes(data: bytes, image: Image.Image) -> int:
    """The memory the image takes once decoded: pixels x bands x bytes per sample.

    A JPEG is counted at the size it will be decoded at (``image.size`` after a
    ``draft``); a PNG by its header's colour type and bit depth (a 16-bit RGBA PNG
    takes 8 bytes a pixel); a WebP as 8-bit RGB or RGBA.
    """
    width, height = image.size
    if image.format == "PNG" and data[12:16] == b"IHDR":
        bands, sample_bytes = PNG_BANDS.get(data[25], 4), 2 if data[24] == 16 else 1
    else:
        bands, sample_bytes = len(image.getbands()), 1
    return width * height * bands * sample_bytes


def check_decoded_size(data: bytes, image: Image.Image, limits: ImageLimits) -> int:
    """The image's decoded size (``decoded_bytes``), refused past the limit."""
    width, height = image.size
    cost = decoded_bytes(data, image)
    if cost > limits.max_decoded_bytes:
        raise ImageRejected(
            "image_too_large",
            f"The {width}x{height} {image.format} takes {cost / MB:.0f} MB once decoded; "
            f"the limit is {limits.max_decoded_bytes / MB:.0f} MB.",
        )
    return cost


def _image_end(data: bytes, image: Image.Image) -> int | None:
    """Where the image's own bytes end, or None if the file stops before.

    A JPEG ends at the first end-of-image marker after the main image's scan begins
    (its compressed data cannot contain one; an EXIF thumbnail has markers of its
    own, earlier), a PNG after its IEND chunk, a WebP where its RIFF header says.
    Phones may append more after the end (Samsung's trailers, motion photos): it is
    not part of the photo.
    """
    if image.format == "JPEG":
        # Opening stops at the main image's start-of-scan: its data begins there.
        end = data.find(b"\xff\xd9", image.fp.tell())
        return None if end < 0 else end + 2
    if image.format == "PNG":
        position = 8
        while position + 12 <= len(data):
            length = int.from_bytes(data[position : position + 4], "big")
            chunk_end = position + 12 + length
            if data[position + 4 : position + 8] == b"IEND":
                return chunk_end if chunk_end <= len(data) else None
            position = chunk_end
        return None
    # Pillow reads a WebP whole when it opens it, so a truncated one never gets here.
    return min(len(data), 8 + int.from_bytes(data[4:8], "little"))


def decode_for_model(
    data: bytes,
    size: tuple[int, int],
    spec: Preprocessing = PRESETS["ecosnap"],
    limits: ImageLimits = DEFAULT_LIMITS,
) -> np.ndarray:
    """Decode an image and resize it to ``size`` (width, height) as ``spec`` says:
    RGB pixels, 0-255, float32, shape (height, width, 3). Within the limits: its
    decoded size is checked before a pixel is decoded, and the decoding holds that
    much of the budget, plus its RGB copy (and the float32 copy TensorFlow's resize
    works on)."""
    image = open_image(data, limits.max_pixels)
    if spec.draft:
        image.draft("RGB", size)
    cost = check_decoded_size(data, image, limits)
    rgb_copy = image.size[0] * image.size[1] * 3
    float_copy = 0 if spec.resize_backend == "pillow" else rgb_copy * 4
    with limits.budget.held(cost + rgb_copy + float_copy) if limits.budget else nullcontext():
        with _rejecting_corrupt():
            if spec.exif_transpose:
                image = ImageOps.exif_transpose(image)
            image = image.convert("RGB")
        if spec.aspect != "pad":
            return _resized(image, size, spec)
        # tf.image.resize_with_pad (image_dataset_from_directory's pad_to_aspect_ratio):
        # resized to fit, then centred in black borders.
        fitted, (left, top) = _fit_within(image.size, size)
        pixels = np.zeros((size[1], size[0], 3), np.float32)
        pixels[top : top + fitted[1], left : left + fitted[0]] = _resized(image, fitted, spec)
        return pixels


def _resized(image: Image.Image, size: tuple[int, int], spec: Preprocessing) -> np.ndarray:
    box = _crop_box(image.size, size) if spec.aspect == "crop" else None
    if spec.resize_backend == "pillow":
        # Resized from the box, as Keras' load_img(keep_aspect_ratio=True) does: the
        # filter may reach past the box's edges, unlike a crop and then a resize.
        resized = image.resize(size, PILLOW_RESAMPLING[spec.resize], box=box)
        return np.asarray(resized, dtype=np.float32)
    pixels = np.asarray(image if box is None else image.crop(box), dtype=np.float32)
    return tf_resize(pixels, size, spec.resize, spec.antialias)


def _fit_within(
    image_size: tuple[int, int], size: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The size of the image scaled to fit ``size``, and where it sits in it (left,
    top), with ``tf.image.resize_with_pad``'s rounding."""
    (width, height), (target_width, target_height) = image_size, size
    ratio = max(width / target_width, height / target_height)
    fitted_width, fitted_height = width / ratio, height / ratio
    left = max(0, math.floor((target_width - fitted_width) / 2))
    top = max(0, math.floor((target_height - fitted_height) / 2))
    # At least a pixel each way: a 2000x1 strip would round to nothing.
    return (max(1, math.floor(fitted_width)), max(1, math.floor(fitted_height))), (left, top)


def _crop_box(image_size: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The largest centred box of the input's aspect ratio, with Keras' rounding
    (``smart_resize``, ``load_img(keep_aspect_ratio=True)``)."""
    (width, height), (target_width, target_height) = image_size, size
    crop_height = max(min(height, width * target_height // target_width), 1)
    crop_width = max(min(width, height * target_width // target_height), 1)
    top, left = (height - crop_height) // 2, (width - crop_width) // 2
    return left, top, left + crop_width, top + crop_height


@contextmanager
def _rejecting_corrupt() -> Iterator[None]:
    """Pillow's errors while decoding pixels mean a truncated or corrupt file."""
    try:
        yield
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected("corrupt_image", f"The image could not be decoded: {exc}.") from exc


def preprocess(
    data: bytes,
    size: tuple[int, int],
    spec: Preprocessing = PRESETS["ecosnap"],
    limits: ImageLimits = DEFAULT_LIMITS,
) -> np.ndarray:
    """Image bytes -> the model's input: float32, shape (height, width, 3)."""
    return spec.values(decode_for_model(data, size, spec, limits))
