"""Procedurally drawn photos of the six kinds of rubbish: the demo dataset.

Each picture is an object (bottle, can, sheet of paper, box, crumpled mixed rubbish,
plastic bottle or bag) with random size, position and rotation, on a random
background (plain, gradient or textured floor), under random light. It trains the
shipped demo model and feeds the tests and benchmarks, so nothing is downloaded.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from common.labels import CLASSES

Color = tuple[int, int, int]
OBJECT_CANVAS = 256


def _jitter(rng: np.random.Generator, color: Color, amount: int = 20) -> Color:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in color)


def _background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    width, height = size
    base = np.array(_jitter(rng, tuple(rng.integers(60, 220, 3)), 0), dtype=np.float32)
    style = rng.integers(3)
    if style == 0:
        pixels = np.broadcast_to(base, (height, width, 3)).copy()
    elif style == 1:
        other = rng.integers(40, 230, 3).astype(np.float32)
        ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
        pixels = np.broadcast_to(base * (1 - ramp) + other * ramp, (height, width, 3)).copy()
    else:
        noise = rng.normal(0.0, 25.0, (height // 8 + 1, width // 8 + 1, 1)).astype(np.float32)
        coarse = Image.fromarray(np.clip(noise[..., 0] + 128, 0, 255).astype(np.uint8))
        texture = np.asarray(coarse.resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
        pixels = base + (texture[..., None] - 128.0)
    pixels += rng.normal(0.0, 4.0, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _glass_bottle(rng: np.random.Generator, draw: ImageDraw.ImageDraw) -> None:
    tint = [(40, 120, 60), (110, 60, 20), (190, 215, 215), (30, 90, 40)][rng.integers(4)]
    color = (*_jitter(rng, tint), int(rng.integers(170, 225)))
    body_w, body_h = int(rng.integers(60, 80)), int(rng.integers(110, 140))
    neck_w, neck_h = body_w // 3, int(rng.integers(50, 70))
    left, top = 128 - body_w // 2, 236 - body_h
    draw.rounded_rectangle((left, top, left + body_w, 236), radius=body_w // 3, fill=color)
    draw.polygon(
        [
            (left + 4, top + 10),
            (128 - neck_w // 2, top - 25),
            (128 + neck_w // 2, top - 25),
            (left + body_w - 4, top + 10),
        ],
        fill=color,
    )
    draw.rectangle((128 - neck_w // 2, top - 25 - neck_h, 128 + neck_w // 2, top - 20), fill=color)
    draw.rectangle(
        (128 - neck_w // 2 - 2, top - 30 - neck_h, 128 + neck_w // 2 + 2, top - 20 - neck_h),
        fill=_jitter(rng, tint, 10),
    )
    draw.rectangle((left + 10, top + 15, left + 18, 226), fill=(255, 255, 255, 150))


def _metal_can(rng: np.random.Generator, draw: ImageDraw.ImageDraw) -> None:
    width, height = int(rng.integers(70, 95)), int(rng.integers(120, 150))
    left, top = 128 - width // 2, 240 - height
    grey = int(rng.integers(150, 200))
    for x in range(width):
        shine = 70 * np.exp(-(((x / width) - 0.35) ** 2) / 0.02)
        value = int(np.clip(grey - 50 * abs(x / width - 0.5) + shine, 0, 255))
        draw.line((left + x, top, left + x, top + height), fill=(value, value, value + 5, 255))
    if rng.random() < 0.7:
        band = _jitter(
            rng, [(200, 30, 30), (30, 60, 180), (20, 140, 60), (230, 190, 30)][rng.integers(4)]
        )
        draw.rectangle(
            (left, top + height // 4, left + width, top + 3 * height // 4), fill=(*band, 255)
        )
    draw.ellipse(
        (left, top - 10, left + width, top + 10),
        fill=(215, 215, 220, 255),
        outline=(120, 120, 125, 255),
        width=3,
    )
    draw.ellipse(
        (left, top + height - 10, left + width, top + height + 10), fill=(140, 140, 145, 255)
    )


def _paper_sheet(rng: np.random.Generator, draw: ImageDraw.ImageDraw) -> None:
    width, height = int(rng.integers(120, 150)), int(rng.integers(160, 200))
    left, top = 128 - width // 2, 128 - height // 2
    paper = _jitter(rng, (245, 243, 235), 10)
    draw.rectangle((left, top, left + width, top + height), fill=(*paper, 255))
    ink = _jitter(rng, (60, 60, 70), 20)
    for y in range(top + 15, top + height - 10, int(rng.integers(8, 13))):
        length = int(width * rng.uniform(0.5, 0.85))
        draw.line((left + 12, y, left + 12 + length, y), fill=(*ink, 255), width=2)
    if rng.random() < 0.5:
        fold = int(rng.integers(15, 30))
        draw.polygon(
            [
                (left + width - fold, top),
                (left + width, top + fold),
                (left + width - fold, top + fold),
            ],
            fill=(215, 212, 205, 255),
        )


def _cardboard_box(rng: np.random.Generator, draw: ImageDraw.ImageDraw) -> None:
    brown = _jitter(rng, (176, 132, 84), 18)
    darker = tuple(int(c * 0.75) for c in brown)
    lighter = tuple(min(255, int(c * 1.15)) for c in brown)
    width, height, depth = int(rng.integers(100, 130)), int(rng.integers(80, 110)), 35
    left, top = 128 - (width + depth) // 2, 140 - height // 2
    draw.rectangle((left, top, left + width, top + height), fill=(*brown, 255))
    draw.polygon(
        [
            (left + width, top),
            (left + width + depth, top - depth),
            (left + width + depth, top + height - depth),
            (left + width, top + height),
        ],
        fill=(*darker, 255),
    )
    draw.polygon(
        [
            (left, top),
            (left + depth, top - depth),
            (left + width + depth, top - depth),
            (left + width, top),
        ],
        fill=(*lighter, 255),
    )
    tape = _jitter(rng, (205, 170, 120), 10)
    draw.rectangle(
        (left + width // 2 - 8, top, left + width // 2 + 8, top + height), fill=(*tape, 255)
    )
    for x in range(left + 6, left + width, 9):
        draw.line((x, top + 4, x, top + 12), fill=(*darker, 255), width=1)


def _mixed_rubbish(rng: np.random.Generator, draw: ImageDraw.ImageDraw) -> None:
    for _ in range(int(rng.integers(9, 16))):
        cx, cy = rng.integers(70, 186, 2)
        radius = int(rng.integers(12, 35))
        angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(5, 9))))
        radii = radius * rng.uniform(0.5, 1.2, len(angles))
        points = [
            (float(cx + r * np.cos(a)), float(cy + r * np.sin(a)))
            for a, r in zip(angles, radii, strict=True)
        ]
        muted = _jitter(rng, tuple(rng.integers(50, 170, 3)), 0)
        draw.polygon(points, fill=(*muted, 255), outline=(30, 30, 30, 255))
    for _ in range(int(rng.integers(10, 25))):
        x, y = rng.integers(70, 186, 2)
        draw.ellipse((x, y, x + 4, y + 4), fill=(25, 20, 15, 255))


def _plastic_item(rng: np.random.Generator, draw: ImageDraw.ImageDraw) -> None:
    tint = _jitter(rng, [(150, 200, 240), (230, 240, 250), (120, 170, 230)][rng.integers(3)])
    if rng.random() < 0.6:
        width, height = int(rng.integers(55, 75)), int(rng.integers(140, 170))
        left, top = 128 - width // 2, 240 - height
        draw.rounded_rectangle(
            (left, top, left + width, 240), radius=14, fill=(*tint, int(rng.integers(120, 180)))
        )
        for y in range(top + 20, 236, 12):
            draw.line((left + 3, y, left + width - 3, y), fill=(255, 255, 255, 160), width=2)
        cap = _jitter(
            rng, [(20, 80, 200), (210, 30, 40), (240, 240, 240), (30, 160, 60)][rng.integers(4)]
        )
        draw.rectangle((128 - 12, top - 18, 128 + 12, top + 2), fill=(*cap, 255))
        label = _jitter(rng, tuple(rng.integers(80, 255, 3)), 0)
        draw.rectangle(
            (left, top + height // 3, left + width, top + height // 2), fill=(*label, 240)
        )
    else:
        angles = np.linspace(0, 2 * np.pi, 14, endpoint=False)
        radii = rng.uniform(55, 85, len(angles))
        points = [
            (float(128 + r * np.cos(a)), float(140 + r * 0.8 * np.sin(a)))
            for a, r in zip(angles, radii, strict=True)
        ]
        draw.polygon(points, fill=(*tint, 150), outline=(255, 255, 255, 200))
        draw.arc((90, 20, 125, 90), 180, 360, fill=(*tint, 220), width=6)
        draw.arc((131, 20, 166, 90), 180, 360, fill=(*tint, 220), width=6)


DRAWERS: dict[str, Callable[[np.random.Generator, ImageDraw.ImageDraw], None]] = {
    "Kaca": _glass_bottle,
    "Logam": _metal_can,
    "Kertas": _paper_sheet,
    "Residu": _mixed_rubbish,
    "Kardus": _cardboard_box,
    "Plastik": _plastic_item,
}


def draw_photo(
    label: str, rng: np.random.Generator, size: tuple[int, int] = (256, 192)
) -> Image.Image:
    """One synthetic photo of ``label`` at ``size`` (width, height), RGB."""
    width, height = size
    photo = _background(rng, size)
    layer = Image.new("RGBA", (OBJECT_CANVAS, OBJECT_CANVAS), (0, 0, 0, 0))
    DRAWERS[label](rng, ImageDraw.Draw(layer))
    layer = layer.rotate(float(rng.uniform(-35, 35)), resample=Image.Resampling.BILINEAR)
    side = int(min(width, height) * rng.uniform(0.6, 0.95))
    layer = layer.resize((side, side), Image.Resampling.BILINEAR)
    x = int(rng.integers(0, max(1, width - side)))
    y = int(rng.integers(0, max(1, height - side)))
    shadow = Image.new("L", (width, height), 0)
    ImageDraw.Draw(shadow).ellipse(
        (x + side // 6, y + side * 3 // 4, x + side * 5 // 6, y + side), fill=90
    )
    photo.paste((0, 0, 0), mask=shadow.filter(ImageFilter.GaussianBlur(side // 12 + 1)))
    photo.paste(layer, (x, y), layer)
    photo = ImageEnhance.Brightness(photo).enhance(float(rng.uniform(0.65, 1.3)))
    photo = ImageEnhance.Contrast(photo).enhance(float(rng.uniform(0.75, 1.25)))
    if rng.random() < 0.3:
        photo = photo.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.5))))
    return photo


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def write_dataset(
    root: Path,
    per_class: int,
    seed: int = 0,
    size: tuple[int, int] = (256, 192),
    folder_names: dict[str, str] | None = None,
) -> Path:
    """Write ``per_class`` JPEGs of each class under ``root/<class folder>/``.

    ``folder_names`` renames class folders (e.g. to English) to exercise aliases.
    """
    rng = np.random.default_rng(seed)
    for label in CLASSES:
        folder = root / (folder_names or {}).get(label, label)
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            (folder / f"{label.lower()}_{index:05d}.jpg").write_bytes(
                jpeg_bytes(draw_photo(label, rng, size))
            )
    return root
