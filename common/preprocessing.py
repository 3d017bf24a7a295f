"""Image checks and the one preprocessing function shared by training and serving.

Decoding uses JPEG draft mode: libjpeg scales by 1/2, 1/4 or 1/8 while decoding, so
a 12-megapixel phone photo is decoded at roughly the model's size instead of in full.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageOps

from common.errors import Refusal

ALLOWED_FORMATS: dict[str, str] = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
FILE_EXTENSIONS: dict[str, str] = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


class ImageRejected(Refusal):
    """An image the service will not classify."""


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


def verify_image(data: bytes, max_pixels: int) -> str:
    """The format of a photo whose header and end are intact; no pixel is decoded.

    Truncation, the usual damage of an upload, is caught here by the file's own end
    marker. Damage inside the compressed data is found where the image is decoded
    for the model: that job fails with ``corrupt_image``. A decode here would cost
    the API about as much CPU as everything else it does for a photo.
    """
    image = open_image(data, max_pixels)
    if not _ends_whole(data, image):
        raise ImageRejected(
            "corrupt_image", f"The {image.format} file is truncated: its end is missing."
        )
    return image.format


def _ends_whole(data: bytes, image: Image.Image) -> bool:
    """Whether the file reaches its format's end: a JPEG's end-of-image marker after
    the main image's scan begins (an EXIF thumbnail has markers of its own, earlier;
    phones may append more after the end) or a PNG's IEND chunk. Pillow reads a WebP
    whole when it opens it, so a truncated one never gets here."""
    if image.format == "JPEG":
        # Opening stops at the main image's start-of-scan: its data begins there.
        return data.rfind(b"\xff\xd9") >= image.fp.tell()
    if image.format == "PNG":
        return b"IEND" in data[-64:]
    return True


def decode_for_model(data: bytes, size: tuple[int, int], max_pixels: int) -> Image.Image:
    """Decode, orient and resize an image to ``size`` (width, height) as RGB."""
    return _decode(open_image(data, max_pixels), size)


def _decode(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    image.draft("RGB", size)
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
    data: bytes, size: tuple[int, int], scale: float, max_pixels: int = 50_000_000
) -> np.ndarray:
    """Image bytes -> float32 array of shape (height, width, 3), scaled by ``scale``."""
    image = decode_for_model(data, size, max_pixels)
    return np.asarray(image, dtype=np.float32) * np.float32(scale)
