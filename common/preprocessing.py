"""Image checks and the one preprocessing function shared by training and serving.

Decoding uses JPEG draft mode: libjpeg scales by 1/2, 1/4 or 1/8 while decoding, so
a 12-megapixel phone photo is decoded at roughly the model's size instead of in full.
PNG and WebP have no such mode: they are decoded whole, so what an image may cost is
bounded by its decoded size (pixels x bands x bytes per sample, read from its header
before any pixel is decoded), and a worker's decoding threads share a memory budget.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from common.errors import Refusal
from common.settings import Settings

ALLOWED_FORMATS: dict[str, str] = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
FILE_EXTENSIONS: dict[str, str] = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


MB = 1024 * 1024
# PNG colour types and their samples per pixel.
PNG_BANDS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


class ImageRejected(Refusal):
    """An image the service will not classify."""


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
    data: bytes, size: tuple[int, int], limits: ImageLimits = DEFAULT_LIMITS
) -> Image.Image:
    """Decode, orient and resize an image to ``size`` (width, height) as RGB, within
    the limits: its decoded size is checked before a pixel is decoded, and the
    decoding holds that much (plus its RGB copy) of the budget."""
    image = open_image(data, limits.max_pixels)
    image.draft("RGB", size)
    cost = check_decoded_size(data, image, limits)
    rgb_copy = image.size[0] * image.size[1] * 3
    with limits.budget.held(cost + rgb_copy) if limits.budget else nullcontext():
        return _decode(image, size)


def _decode(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    with _rejecting_corrupt():
        image = ImageOps.exif_transpose(image)
        image = image.convert("RGB")
    return image.resize(size, Image.Resampling.BILINEAR)


@contextmanager
def _rejecting_corrupt() -> Iterator[None]:
    """Pillow's errors while decoding pixels mean a truncated or corrupt file."""
    try:
        yield
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected("corrupt_image", f"The image could not be decoded: {exc}.") from exc


def preprocess(
    data: bytes, size: tuple[int, int], scale: float, limits: ImageLimits = DEFAULT_LIMITS
) -> np.ndarray:
    """Image bytes -> float32 array of shape (height, width, 3), scaled by ``scale``."""
    image = decode_for_model(data, size, limits)
    return np.asarray(image, dtype=np.float32) * np.float32(scale)
