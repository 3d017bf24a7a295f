"""``ecosnap predict`` and the client module it is built on, against a real stack whose
rate limit the photos exceed: the client waits as ``Retry-After`` says."""

from __future__ import annotations

import csv
import json

import pytest

from cli.main import main
from common.client import APIError, Client
from common.labels import CLASSES
from tests.conftest import photo, run_stack


@pytest.fixture(scope="module")
def limited_stack(redis_url, tmp_path_factory):
    yield from run_stack(
        redis_url.rsplit("/", 1)[0] + "/15",
        tmp_path_factory.mktemp("limited-stack"),
        {"RATE_LIMIT_PHOTOS": "4 per 2 second"},
    )


@pytest.fixture
def folder(tmp_path):
    """Photos in a folder and a subfolder, a text file named like one, and a note."""
    (tmp_path / "photos" / "kitchen").mkdir(parents=True)
    for index, label in enumerate(CLASSES[:3]):
        (tmp_path / "photos" / f"{index}-{label}.jpg").write_bytes(photo(label, seed=index))
    for index, label in enumerate(CLASSES[3:]):
        (tmp_path / "photos" / "kitchen" / f"{index}.png").write_bytes(photo(label, seed=9))
    (tmp_path / "photos" / "kitchen" / "broken.jpg").write_bytes(b"not a photo")
    (tmp_path / "photos" / "notes.txt").write_text("not searched")
    return tmp_path / "photos"


def test_a_folder_is_classified_through_the_rate_limit_into_csv(limited_stack, folder, tmp_path):
    output = tmp_path / "answers.csv"
    code = main(["predict", str(folder), "--api", limited_stack.base_url, "--concurrency", "4",
                 "--output", str(output)])  # fmt: skip
    rows = list(csv.DictReader(output.open()))
    assert code == 1  # one photo could not be classified, said in its row
    assert len(rows) == 7 and not any(row["source"].endswith(".txt") for row in rows)
    answered = [row for row in rows if not row["error"]]
    assert len(answered) == 6, rows  # 7 photos against 4 per 2 s: the client waited
    assert all(row["label"] in CLASSES and float(row["confidence"]) > 0 for row in answered)
    (broken,) = [row for row in rows if row["error"]]
    assert broken["source"].endswith("broken.jpg") and "unsupported_media_type" in broken["error"]


def test_json_lines_on_stdout(limited_stack, folder, capsys):
    photo_path = next(folder.glob("*.jpg"))
    assert main(["predict", str(photo_path), "--api", limited_stack.base_url, "--output", "-",
                 "--lang", "en"]) == 0  # fmt: skip
    (line,) = capsys.readouterr().out.splitlines()
    row = json.loads(line)
    assert row["source"] == str(photo_path) and row["label"] in CLASSES and row["job_id"]


def test_the_client_raises_what_the_service_refused(limited_stack):
    # The tests before may have used this second's photos: a 429 is waited out first.
    client = Client(limited_stack.base_url)
    with pytest.raises(APIError) as refused:
        client.predict(b"")
    assert (refused.value.status, refused.value.code) == (400, "empty_file")
    answered = client.predict(photo(), wait_s=20)
    assert answered["label"] in CLASSES
    assert client.model_info()["output_classes"] == list(CLASSES)
