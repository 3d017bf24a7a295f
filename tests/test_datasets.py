"""Dataset zips: layouts people ship, and limits that stop zip bombs (real crafted zips)."""

import io
import zipfile

import pytest

from common.datasets import DatasetError, ZipLimits, plan_zip, read_member
from common.labels import CLASSES
from tests.conftest import photo

LIMITS = ZipLimits()


def make_zip(members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> zipfile.ZipFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    buffer.seek(0)
    return zipfile.ZipFile(buffer)


def labels_of(plan) -> list[str]:
    return sorted(CLASSES[index] for _, index in plan.items)


IMAGE = photo()


def test_class_folders_at_any_depth_in_both_languages():
    archive = make_zip({
        "DATASETS/Plastik/a.jpg": IMAGE,
        "dataset-resized/glass/b.JPG": IMAGE,
        "deep/er/still/CardBoard/c.png": IMAGE,
        "trash/d.jpeg": IMAGE,
    })  # fmt: skip
    plan = plan_zip(archive, LIMITS, None)
    assert labels_of(plan) == ["Kaca", "Kardus", "Plastik", "Residu"]
    assert plan.split is None and plan.splits == []


def test_test_split_is_chosen_by_default_in_any_case():
    archive = make_zip({
        "Train/Kaca/a.jpg": IMAGE,
        "Validation/Kaca/b.jpg": IMAGE,
        "TEST/Kaca/c.jpg": IMAGE,
        "TEST/metal/d.jpg": IMAGE,
    })  # fmt: skip
    plan = plan_zip(archive, LIMITS, None)
    assert plan.splits == ["test", "train", "val"] and plan.split == "test"
    assert [name for name, _ in plan.items] == ["TEST/Kaca/c.jpg", "TEST/metal/d.jpg"]
    assert plan.skipped["other_split"] == 2
    assert plan_zip(archive, LIMITS, "validation").items == [("Validation/Kaca/b.jpg", 0)]
    with pytest.raises(DatasetError) as caught:
        plan_zip(make_zip({"train/Kaca/a.jpg": IMAGE}), LIMITS, None)
    assert caught.value.code == "split_not_found"


def test_junk_is_skipped_and_counted_and_unknown_folders_are_named():
    archive = make_zip({
        "data/Kaca/a.jpg": IMAGE,
        "data/.DS_Store": b"x",
        "__MACOSX/data/Kaca/._a.jpg": b"x",
        "data/README.txt": b"hello",
        "data/more.zip": b"PK",
        "data/bottles/e.jpg": IMAGE,
    })  # fmt: skip
    plan = plan_zip(archive, LIMITS, None)
    assert labels_of(plan) == ["Kaca"]
    assert plan.skipped == {"system_file": 2, "not_an_image": 1, "nested_archive": 1,
                            "no_class_folder": 1}  # fmt: skip
    assert plan.unmatched_folders == ["bottles"]


def test_nothing_matching_fails_with_the_folders_seen():
    with pytest.raises(DatasetError) as caught:
        plan_zip(make_zip({"photos/bottles/a.jpg": IMAGE}), LIMITS, None)
    assert caught.value.code == "no_matching_classes"
    assert "bottles" in caught.value.message


@pytest.mark.parametrize(
    "name", ["../evil/Kaca/a.jpg", "/abs/Kaca/a.jpg", "a/../../Kaca/b.jpg", "C:/Kaca/a.jpg"]
)
def test_member_names_escaping_the_archive_are_refused(name):
    with pytest.raises(DatasetError) as caught:
        plan_zip(make_zip({name: IMAGE}), LIMITS, None)
    assert caught.value.code == "unsafe_member_name"


def test_compression_ratio_limit_stops_a_zip_bomb():
    bomb = make_zip({"Kaca/a.jpg": b"\0" * 5_000_000}, zipfile.ZIP_DEFLATED)
    with pytest.raises(DatasetError) as caught:
        plan_zip(bomb, LIMITS, None)
    assert caught.value.code == "compression_ratio"


def test_total_uncompressed_size_limit():
    archive = make_zip({f"Kaca/{i}.jpg": IMAGE for i in range(5)})
    with pytest.raises(DatasetError) as caught:
        plan_zip(archive, ZipLimits(max_uncompressed_bytes=3 * len(IMAGE)), None)
    assert caught.value.code == "too_large_uncompressed"


def test_member_count_limit():
    archive = make_zip({f"Kaca/{i}.jpg": b"x" for i in range(11)})
    with pytest.raises(DatasetError) as caught:
        plan_zip(archive, ZipLimits(max_members=10), None)
    assert caught.value.code == "too_many_members"


def test_oversized_member_is_skipped():
    plan = plan_zip(make_zip({"Kaca/a.jpg": IMAGE, "Kaca/b.jpg": IMAGE + b"\0" * 200}),
                    ZipLimits(max_member_bytes=len(IMAGE) + 100), None)  # fmt: skip
    assert [name for name, _ in plan.items] == ["Kaca/a.jpg"]
    assert plan.skipped["image_too_large"] == 1


def test_a_damaged_member_reads_as_unreadable_not_as_a_crash():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("Kaca/a.jpg", IMAGE)
    damaged = bytearray(buffer.getvalue())
    damaged[damaged.index(IMAGE[:64]) + 100] ^= 0xFF
    with pytest.raises(DatasetError) as caught:
        read_member(zipfile.ZipFile(io.BytesIO(bytes(damaged))), "Kaca/a.jpg")
    # The zip was found: a bad member is never reported as a missing image.
    assert caught.value.code == "unreadable_image"
