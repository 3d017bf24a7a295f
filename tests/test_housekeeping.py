"""Uploads and downloaded copies expire, so a long-running service does not fill its disk."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from common.processes import wait_until
from common.settings import Settings
from common.storage import LocalStorage, remove_files_older_than
from tests.conftest import Stack, photo, run_stack

DAY_S = 24 * 3600
RETENTION_S = 3600


def aged(path: Path, age_s: float, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_only_files_past_the_age_are_removed(tmp_path: Path) -> None:
    old = aged(tmp_path / "old.jpg", 2 * DAY_S)
    fresh = aged(tmp_path / "fresh.jpg", 60)
    folder = tmp_path / "folder"
    folder.mkdir()
    os.utime(folder, (0, 0))

    assert remove_files_older_than(tmp_path, DAY_S) == 1

    assert not old.exists() and fresh.exists() and folder.exists()


def test_a_missing_folder_has_nothing_to_remove(tmp_path: Path) -> None:
    assert remove_files_older_than(tmp_path / "never-created", DAY_S) == 0


def test_using_a_stored_file_keeps_it_past_its_upload_age(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    key = storage.save(b"PK\x03\x04", "zip", "application/zip")
    then = time.time() - 2 * DAY_S
    os.utime(storage.path_for(key), (then, then))

    storage.local_path(key)  # an evaluation opens the dataset now

    assert storage.prune(DAY_S) == 0
    assert storage.read(key) == b"PK\x03\x04"


@pytest.fixture
def uploads(tmp_path: Path) -> dict[str, Path]:
    """Uploads left by an earlier run: one expired, one crash leftover, one recent."""
    folder = Settings(var_dir=tmp_path).upload_dir
    return {
        "expired": aged(folder / f"{'a' * 32}.jpg", 2 * RETENTION_S),
        "partial": aged(folder / f"{'b' * 32}.part", DAY_S),
        "recent": aged(folder / f"{'c' * 32}.jpg", RETENTION_S / 2),
    }


@pytest.fixture
def sweeping_stack(redis_url: str, tmp_path: Path, uploads: dict[str, Path]) -> Iterator[Stack]:
    yield from run_stack(
        redis_url.rsplit("/", 1)[0] + "/4", tmp_path, {"UPLOAD_RETENTION_S": str(RETENTION_S)}
    )


def test_a_worker_sweeps_expired_uploads_and_keeps_the_rest(
    sweeping_stack: Stack, uploads: dict[str, Path]
) -> None:
    wait_until(
        lambda: not uploads["expired"].exists() and not uploads["partial"].exists(), 30, "sweep"
    )
    response = requests.post(
        sweeping_stack.url("/predict?wait=20"), files={"file": ("p.jpg", photo())}, timeout=30
    )

    assert response.status_code == 200, response.text
    assert uploads["recent"].exists()


def test_uploads_live_as_long_as_job_records_unless_told() -> None:
    assert Settings.from_env({"RESULT_TTL_S": "7200"}).upload_retention_s == 7200
    assert Settings.from_env({"UPLOAD_RETENTION_S": "0"}).upload_retention_s == 0
    with pytest.raises(ValueError, match="UPLOAD_RETENTION_S"):
        Settings.from_env({"UPLOAD_RETENTION_S": "-1"})
