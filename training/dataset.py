"""Load a folder of class folders into arrays through the serving preprocessing."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np

from common.datasets import IMAGE_SUFFIXES, label_and_split
from common.labels import CLASSES
from common.preprocessing import ImageRejected, preprocess


def find_images(root: Path) -> list[tuple[Path, str]]:
    """Every image under ``root`` inside a class-named folder (any depth), sorted."""
    found = []
    for path in sorted(root.rglob("*")):
        label, _ = label_and_split(PurePosixPath(path.relative_to(root).as_posix()))
        if path.suffix.lower() in IMAGE_SUFFIXES and label is not None:
            found.append((path, label))
    return found


def load_arrays(root: Path, size: tuple[int, int], scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Images as (N, height, width, 3) float32 and labels as class indices."""
    images, labels = [], []
    for path, label in find_images(root):
        try:
            images.append(preprocess(path.read_bytes(), size, scale))
        except ImageRejected:
            continue
        labels.append(CLASSES.index(label))
    if not images:
        raise ValueError(f"No images of the classes {', '.join(CLASSES)} under {root}.")
    return np.stack(images), np.asarray(labels, dtype=np.int64)
