"""Training data: a folder, a zip or a Kaggle dataset, read through the serving preprocessing.

The layouts and class-name aliases are those of evaluation (``common.datasets``), so a
zip that evaluates also trains. Images go through ``common.preprocessing.preprocess``,
the function the worker uses, so the model learns from exactly what it will be fed.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from common.datasets import (
    DatasetCatalog,
    DatasetError,
    ZipLimits,
    catalog_folder,
    catalog_zip,
    read_member,
)
from common.labels import CLASSES
from common.preprocessing import ImageRejected, Preprocessing, preprocess

KAGGLE_PREFIX = "kaggle:"
SPLITS = ("train", "val", "test")


@dataclass
class LabelledImages:
    """Images as (N, height, width, 3) float32, labels as class indices, and their origin."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    given_splits: list[str | None]
    fingerprint: str
    skipped: Counter


def download_kaggle(handle: str) -> Path:
    """Fetch ``OWNER/DATASET[/versions/N]`` with kagglehub; returns the local folder.

    Without a version kagglehub always asks Kaggle for the latest one, so only a
    versioned handle already in kagglehub's cache (``KAGGLEHUB_CACHE``) works offline.
    """
    import kagglehub
    import requests

    try:
        return Path(kagglehub.dataset_download(handle))
    except (ValueError, requests.RequestException) as exc:  # bad handle, HTTP or network
        raise DatasetError(
            "kaggle_unavailable", f"Could not fetch the Kaggle dataset {handle!r}: {exc}"
        ) from exc


def open_source(
    source: str, limits: ZipLimits
) -> tuple[DatasetCatalog, Callable[[str], bytes], str]:
    """The catalog of ``source``, a reader of its members by name, and a display name."""
    if source.startswith(KAGGLE_PREFIX):
        folder = download_kaggle(source.removeprefix(KAGGLE_PREFIX))
        catalog, read, _ = open_source(str(folder), limits)
        return catalog, read, source
    path = Path(source)
    if path.is_dir():
        return (
            catalog_folder(path, limits.max_member_bytes),
            lambda name: (path / name).read_bytes(),
            path.name,
        )
    if path.is_file():
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile as exc:
            raise DatasetError("not_a_zip", f"{path} is neither a folder nor a zip.") from exc
        return catalog_zip(archive, limits), partial(read_member, archive), path.name
    raise DatasetError("dataset_not_found", f"{source}: no such folder or zip.")


def load(
    source: str,
    size: tuple[int, int],
    spec: Preprocessing,
    limits: ZipLimits | None = None,
) -> LabelledImages:
    """Decode every labelled image of ``source``; unreadable ones are counted, not fatal.

    Images are ordered by their given split, class and content hash, not by file
    name or archive order, so the same images split the same way for a seed however
    they are named or packed. The fingerprint hashes those same entries: renaming
    files keeps it, changing one pixel does not.
    """
    catalog, read, name = open_source(source, limits or ZipLimits())
    entries = []
    skipped = Counter(catalog.skipped)
    for split, items in catalog.by_split.items():
        for member, label in items:
            try:
                data = read(member)
                image = preprocess(data, size, spec)
            except (ImageRejected, DatasetError, OSError):
                skipped["unreadable_image"] += 1
                continue
            entries.append((split or "", CLASSES[label], hashlib.sha256(data).hexdigest(), image))
    if not entries:
        raise DatasetError("no_readable_images", f"No image of {source} could be read.")
    entries.sort(key=lambda entry: entry[:3])
    return LabelledImages(
        name=name,
        images=np.stack([entry[3] for entry in entries]),
        labels=np.array([CLASSES.index(entry[1]) for entry in entries], dtype=np.int64),
        given_splits=[entry[0] or None for entry in entries],
        fingerprint=hashlib.sha256(
            "\n".join("\t".join(entry[:3]) for entry in entries).encode()
        ).hexdigest(),
        skipped=skipped,
    )


def _cut(
    pool: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Split ``pool`` into (kept, cut), stratified by class whenever the counts allow it."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels[pool])
    cut_size = int(np.ceil(len(pool) * fraction))
    stratify = counts[counts > 0].min() >= 2 and cut_size >= np.count_nonzero(counts)
    kept, cut = train_test_split(
        pool, test_size=fraction, random_state=seed, stratify=labels[pool] if stratify else None
    )
    return np.sort(kept), np.sort(cut), bool(stratify)


def assign_splits(
    labels: np.ndarray,
    given_splits: list[str | None],
    seed: int,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.2,
) -> tuple[dict[str, np.ndarray], bool]:
    """Indices of train, val and test, and whether every cut was stratified.

    A split the data already has is kept. A missing one is cut from the training
    images as the seed's notebook did: 20% for test, then 20% of the rest for
    validation. Images outside any split folder count as training images.
    """
    given = np.array([split or "train" for split in given_splits])
    indices = {split: np.flatnonzero(given == split) for split in SPLITS}
    stratified = True
    for split, fraction in (("test", test_fraction), ("val", validation_fraction)):
        if len(indices[split]) == 0 and len(indices["train"]) > 1:
            indices["train"], indices[split], was_stratified = _cut(
                indices["train"], labels, fraction, seed
            )
            stratified &= was_stratified
    empty = [split for split in SPLITS if len(indices[split]) == 0]
    if empty:
        raise DatasetError(
            "too_few_images",
            f"Too few images to fill the {', '.join(empty)} split(s): {len(labels)} readable.",
        )
    return indices, stratified
