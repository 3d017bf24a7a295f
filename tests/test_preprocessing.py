"""The shared preprocessing: formats, limits, draft decoding, EXIF, scaling."""

import threading
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from PIL.JpegImagePlugin import JpegImageFile

from api.errors import http_status
from bench.images import flat_png
from common.preprocessing import (
    MB,
    PRESETS,
    DecodeBudget,
    ImageLimits,
    ImageRejected,
    decode_for_model,
    preprocess,
    verify_image,
)
from tests.conftest import damaged_png, encoded, photo


def two_tone(size=(400, 300)) -> Image.Image:
    """Left half red, right half blue: its orientation is visible after decoding."""
    image = Image.new("RGB", size, (255, 0, 0))
    image.paste((0, 0, 255), (size[0] // 2, 0, size[0], size[1]))
    return image


def test_preprocess_gives_scaled_float_array_of_model_size():
    array = preprocess(photo(), (128, 128))
    assert array.shape == (128, 128, 3)
    assert array.dtype == np.float32
    assert array.min() >= 0.0 and array.max() <= 1.0
    assert array.max() > 0.5


def test_a_strip_one_pixel_high_is_padded_not_refused():
    strip = encoded(Image.new("RGB", (2000, 1), (200, 10, 10)), "PNG")
    for preset in ("keras-image-dataset", "keras-flow-from-directory"):
        spec = replace(PRESETS[preset], aspect="pad")
        pixels = decode_for_model(strip, (128, 128), spec)
        assert pixels.shape == (128, 128, 3) and pixels[63, 64, 0] == pytest.approx(200, abs=1)


def test_png_with_alpha_and_webp_become_rgb():
    rgba = Image.new("RGBA", (64, 48), (10, 200, 30, 128))
    for data in (encoded(rgba, "PNG"), encoded(rgba, "WEBP")):
        assert decode_for_model(data, (32, 32)).shape == (32, 32, 3)  # RGB


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = encoded(two_tone(), "JPEG", exif=exif.tobytes(), quality=95)
    upright = np.asarray(decode_for_model(data, (64, 64)), dtype=np.int16)
    top, bottom = upright[4, 32], upright[60, 32]
    assert top[0] > 200 and top[2] < 60, "red half should be on top after rotation"
    assert bottom[2] > 200 and bottom[0] < 60


def test_large_jpeg_is_decoded_in_draft_mode(monkeypatch):
    requested = []
    original = JpegImageFile.draft

    def spy(self, mode, size):
        result = original(self, mode, size)
        requested.append((self.size, result))
        return result

    monkeypatch.setattr(JpegImageFile, "draft", spy)
    data = photo(size=(4000, 3000))
    assert decode_for_model(data, (128, 128)).shape == (128, 128, 3)
    decoded_size, _ = requested[0]
    assert decoded_size == (500, 375), "libjpeg should decode at 1/8 scale"


@pytest.mark.parametrize(
    ("data", "code", "status"),
    [
        (b"", "empty_file", 400),
        (b"this is text, not a photo\n" * 10, "unsupported_media_type", 415),
        (encoded(two_tone(), "GIF"), "unsupported_media_type", 415),
        (encoded(two_tone(), "BMP"), "unsupported_media_type", 415),
        (photo()[:1500], "corrupt_image", 400),
    ],
    ids=["empty", "text", "gif", "bmp", "truncated-jpeg"],
)
def test_bad_images_are_rejected_with_a_reason(data, code, status):
    with pytest.raises(ImageRejected) as caught:
        verify_image(data)
    assert (caught.value.code, http_status(caught.value)) == (code, status)
    assert caught.value.message


def test_pixel_limit_is_enforced_before_decoding():
    data = encoded(Image.new("RGB", (3000, 2000)), "PNG")
    with pytest.raises(ImageRejected) as caught:
        verify_image(data, ImageLimits(max_pixels=1_000_000))
    assert http_status(caught.value) == 413


def test_verify_returns_the_detected_format():
    assert verify_image(photo()).format == "JPEG"
    assert verify_image(encoded(two_tone(), "PNG")).format == "PNG"


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP"])
def test_a_truncated_file_of_any_format_is_refused_without_decoding(image_format):
    whole = encoded(two_tone(), image_format)
    assert verify_image(whole).format == image_format
    with pytest.raises(ImageRejected) as caught:
        verify_image(whole[: len(whole) * 2 // 3])
    # Pillow cannot even open a truncated WebP; the others miss their end marker.
    expected = "unsupported_media_type" if image_format == "WEBP" else "corrupt_image"
    assert caught.value.code == expected and http_status(caught.value) >= 400


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP"])
def test_what_follows_an_images_end_is_cut_off(image_format):
    """Phones append data after a JPEG's end (Samsung's trailers, motion photos), and
    an attacker an HTML page: neither is part of the photo stored and served."""
    whole = encoded(two_tone(), image_format)
    for trailer in (b"SEFH" + bytes(4000), b"<html><script>alert(1)</script></html>"):
        verified = verify_image(whole + trailer)
        assert (verified.format, verified.data) == (image_format, whole)


def test_memory_is_bounded_by_the_decoded_size_not_only_the_pixel_count():
    """A 49-megapixel 16-bit RGBA PNG is 381 KB on the wire and 374 MB decoded."""
    worst = flat_png(7000, 7000)
    assert len(worst) < 400_000
    with pytest.raises(ImageRejected) as caught:
        verify_image(worst)  # refused from its header, before a pixel is decoded
    assert (caught.value.code, http_status(caught.value)) == ("image_too_large", 413)
    assert "374 MB" in caught.value.message
    # The same pixels in 8-bit grey take an eighth of that: within the limit.
    grey = flat_png(7000, 7000, bit_depth=8, colour_type=0)
    assert verify_image(grey).format == "PNG"
    with pytest.raises(ImageRejected):  # the worker checks it again, as it decodes it
        decode_for_model(worst, (128, 128))


def test_a_large_jpeg_counts_at_the_size_it_is_decoded_at():
    """libjpeg decodes a JPEG at up to 1/8 of its size, so a 20-megapixel JPEG costs
    about 1 MB, well within a limit a 20-megapixel PNG exceeds."""
    limits = ImageLimits(max_decoded_bytes=10 * MB)
    assert verify_image(photo(size=(5000, 4000)), limits).format == "JPEG"
    decoded = decode_for_model(photo(size=(5000, 4000)), (128, 128), limits=limits)
    assert decoded.shape == (128, 128, 3)
    with pytest.raises(ImageRejected):
        verify_image(flat_png(5000, 4000, bit_depth=8, colour_type=2), limits)


def test_decoding_threads_share_a_memory_budget():
    budget = DecodeBudget(100)
    order = []

    def second() -> None:
        with budget.held(60):
            order.append("second")

    with budget.held(60):
        waiting = threading.Thread(target=second)
        waiting.start()
        waiting.join(0.2)
        assert waiting.is_alive(), "the second image waits while the first holds the budget"
        order.append("first")
    waiting.join(5)
    assert order == ["first", "second"]
    with budget.held(1000):  # larger than the whole budget: it waits for all of it
        pass


def test_damage_inside_a_whole_file_is_found_when_it_is_decoded():
    data = damaged_png()
    assert verify_image(data).format == "PNG"  # the API accepts it ...
    with pytest.raises(ImageRejected) as caught:  # ... and the worker's decode refuses it
        decode_for_model(data, (128, 128))
    assert caught.value.code == "corrupt_image"


def test_a_truncated_jpeg_is_refused_although_its_thumbnail_is_whole():
    """Phone photos carry a thumbnail, a whole JPEG with its own end marker, before the
    main image: only the main image's end counts."""
    thumbnail = photo(size=(160, 120))
    segment = b"\xff\xe2" + (len(thumbnail) + 2).to_bytes(2, "big") + thumbnail
    main = photo(size=(800, 600))
    with_thumbnail = main[:2] + segment + main[2:]
    assert verify_image(with_thumbnail).format == "JPEG"
    with pytest.raises(ImageRejected) as caught:
        verify_image(with_thumbnail[: len(with_thumbnail) // 2])
    assert caught.value.code == "corrupt_image"
