"""Labelled datasets as people ship them: class folders at any depth, optional splits.

Used for zips by evaluation (read member by member, never extracted) and for
folders by training, so both accept the same layouts and class-name aliases.
"""

from __future__ import annotations

import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from common.errors import Refusal
from common.labels import CLASSES, resolve_class
from common.settings import Settings

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
ARCHIVE_SUFFIXES = frozenset({".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".rar", ".7z"})
SYSTEM_NAMES = frozenset({"__macosx", ".ds_store", "thumbs.db", "desktop.ini"})
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}  # fmt: skip


class DatasetError(Refusal):
    """A dataset, or one of its images, that the service refuses."""


@dataclass(frozen=True)
class ZipLimits:
    """Bounds that stop zip bombs before anything is decompressed."""

    max_members: int = 100_000
    max_uncompressed_bytes: int = 4 * 1024**3
    max_compression_ratio: float = 100.0
    max_member_bytes: int = 10 * 1024**2

    @classmethod
    def from_settings(cls, settings: Settings) -> ZipLimits:
        return cls(
            max_members=settings.max_dataset_members,
            max_uncompressed_bytes=int(settings.max_dataset_uncompressed_mb * 1024 * 1024),
            max_compression_ratio=settings.max_compression_ratio,
            max_member_bytes=settings.max_upload_bytes,
        )


def read_member(archive: zipfile.ZipFile, name: str) -> bytes:
    """A member's bytes; a damaged, encrypted or oddly compressed member is just unreadable.

    The zip itself was found, so this is never ``image_not_found``: the member's
    own error says what is wrong with it.
    """
    try:
        return archive.read(name)
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        OSError,
        RuntimeError,
        NotImplementedError,
    ) as exc:
        raise DatasetError("unreadable_image", f"{name}: {exc}") from exc


def label_and_split(path: PurePosixPath) -> tuple[str | None, str | None]:
    """The class of the nearest class-named folder above ``path``, and its split."""
    folders = path.parts[:-1]
    label = next((resolve_class(part) for part in reversed(folders) if resolve_class(part)), None)
    split = next(
        (SPLIT_ALIASES[p.casefold()] for p in folders if p.casefold() in SPLIT_ALIASES), None
    )
    return label, split


@dataclass
class DatasetCatalog:
    """Every labelled image of a dataset by split (``None``: no split folder), and the rest."""

    by_split: dict[str | None, list[tuple[str, int]]] = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)
    unmatched_folders: list[str] = field(default_factory=list)

    @property
    def splits(self) -> list[str]:
        return sorted(split for split in self.by_split if split is not None)

    def add(self, name: str, size: int, max_member_bytes: int) -> None:
        """File one member (a zip member or a file under a folder) by its path alone."""
        path = _check_name(name)
        suffix = path.suffix.lower()
        if any(part.casefold() in SYSTEM_NAMES or part.startswith("._") for part in path.parts):
            self.skipped["system_file"] += 1
        elif suffix in ARCHIVE_SUFFIXES:
            self.skipped["nested_archive"] += 1
        elif suffix not in IMAGE_SUFFIXES:
            self.skipped["not_an_image"] += 1
        elif size > max_member_bytes:
            self.skipped["image_too_large"] += 1
        else:
            label, split = label_and_split(path)
            if label is None:
                folder = path.parent.name or "(top level)"
                if folder not in self.unmatched_folders:
                    self.unmatched_folders.append(folder)
                self.skipped["no_class_folder"] += 1
            else:
                self.by_split.setdefault(split, []).append((name, CLASSES.index(label)))

    def require_images(self) -> None:
        """Refuse a dataset in which no image sits in a class folder."""
        self.unmatched_folders.sort()
        if not self.by_split:
            raise DatasetError(
                "no_matching_classes",
                "No image sits in a folder named after a class "
                f"({', '.join(CLASSES)} or their English names). Folders seen: "
                f"{', '.join(self.unmatched_folders) or 'none'}.",
            )


@dataclass
class DatasetPlan:
    """What to classify: ``(member name, class index)`` pairs, and what was left out."""

    items: list[tuple[str, int]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    unmatched_folders: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    split: str | None = None


def _check_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name or name[1:2] == ":":
        raise DatasetError("unsafe_member_name", f"The zip member {name!r} escapes the archive.")
    return path


def _check_limits(members: list[zipfile.ZipInfo], limits: ZipLimits) -> None:
    if len(members) > limits.max_members:
        raise DatasetError(
            "too_many_members",
            f"The zip has {len(members)} members; the limit is {limits.max_members}.",
        )
    total = sum(member.file_size for member in members)
    if total > limits.max_uncompressed_bytes:
        raise DatasetError(
            "too_large_uncompressed",
            f"The zip would expand to {total} bytes; the limit is {limits.max_uncompressed_bytes}.",
        )
    for member in members:
        ratio = member.file_size / max(member.compress_size, 1)
        if ratio > limits.max_compression_ratio:
            raise DatasetError(
                "compression_ratio",
                f"{member.filename!r} expands {ratio:.0f} times; the limit is "
                f"{limits.max_compression_ratio:g} (a zip bomb?).",
            )


def catalog_zip(archive: zipfile.ZipFile, limits: ZipLimits) -> DatasetCatalog:
    """File a zip's images from its central directory alone (no decompression)."""
    members = [member for member in archive.infolist() if not member.is_dir()]
    _check_limits(members, limits)
    catalog = DatasetCatalog()
    for member in members:
        catalog.add(member.filename, member.file_size, limits.max_member_bytes)
    catalog.require_images()
    return catalog


def catalog_folder(root: Path, max_member_bytes: int) -> DatasetCatalog:
    """File a folder's images by their paths relative to ``root``, in the zip's way."""
    catalog = DatasetCatalog()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        catalog.add(path.relative_to(root).as_posix(), path.stat().st_size, max_member_bytes)
    catalog.require_images()
    return catalog


def plan_zip(archive: zipfile.ZipFile, limits: ZipLimits, split: str | None) -> DatasetPlan:
    """Choose the images of one split to evaluate."""
    catalog = catalog_zip(archive, limits)
    plan = DatasetPlan(
        skipped=catalog.skipped,
        unmatched_folders=catalog.unmatched_folders,
        splits=catalog.splits,
        split=_choose_split(catalog.splits, split),
    )
    plan.items = sorted(catalog.by_split.get(plan.split, []))
    outside = sum(len(items) for name, items in catalog.by_split.items() if name != plan.split)
    if outside:
        plan.skipped["other_split"] += outside
    return plan


def _choose_split(available: list[str], requested: str | None) -> str | None:
    """``requested``, or ``test`` when the zip has splits; ``None`` means all images."""
    if requested is None and not available:
        return None
    chosen = SPLIT_ALIASES.get((requested or "test").casefold())
    if chosen not in available:
        raise DatasetError(
            "split_not_found",
            f"The zip has no {requested or 'test'!r} split; it has: "
            f"{', '.join(available) or 'no splits'}.",
        )
    return chosen
