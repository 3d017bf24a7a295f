"""The bucket path against a real gcp-storage-emulator on loopback."""

import io
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
import requests
from google.cloud import storage

from api import create_app
from common.storage import GCSStorage
from tests.conftest import photo

TIMEOUT = 60


@pytest.fixture
def bucket(gcs_emulator):
    return storage.Client().bucket(gcs_emulator.bucket)


def put(bucket, key: str, data: bytes) -> None:
    bucket.blob(key).upload_from_string(data, content_type="image/jpeg")


def predict_url(gcs_stack, url: str, as_json: bool = True):
    kwargs = {"json": {"url": url}} if as_json else {"data": {"url": url}}
    return requests.post(gcs_stack.url("/predict?wait=20"), timeout=TIMEOUT, **kwargs)


def test_uploads_are_stored_in_the_bucket_under_generated_names(gcs_stack, bucket):
    data = photo("Kertas", seed=7)
    response = requests.post(
        gcs_stack.url("/predict?wait=20"),
        files={"file": ("../../evil name.jpg", data)},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    image_url = response.json()["image_url"]
    prefix = f"https://storage.googleapis.com/{bucket.name}/uploads/"
    assert image_url.startswith(prefix)
    key = image_url.removeprefix(f"https://storage.googleapis.com/{bucket.name}/")
    assert "evil" not in key
    assert bucket.blob(key).download_as_bytes() == data


@pytest.mark.parametrize("form", ["gs", "https"])
def test_predict_reads_an_object_named_by_url(gcs_stack, bucket, form):
    put(bucket, "photos/can one.jpg", photo("Logam", seed=9))
    url = {
        "gs": f"gs://{bucket.name}/photos/can one.jpg",
        "https": f"https://storage.googleapis.com/{bucket.name}/photos/can%20one.jpg",
    }[form]
    response = predict_url(gcs_stack, url, as_json=form == "gs")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image_url"] == f"https://storage.googleapis.com/{bucket.name}/photos/can%20one.jpg"
    assert body["label"] == "Logam"


def test_missing_object_is_404(gcs_stack, bucket):
    response = predict_url(gcs_stack, f"gs://{bucket.name}/photos/nothing-here.jpg")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "image_not_found"


def test_a_corrupt_object_fails_only_its_own_job(gcs_stack, bucket):
    put(bucket, "photos/broken.jpg", photo("Kaca", seed=1)[:1800])
    good_keys = [f"photos/good-{i}.jpg" for i in range(6)]
    for i, key in enumerate(good_keys):
        put(bucket, key, photo("Kardus", seed=40 + i))
    urls = [f"gs://{bucket.name}/photos/broken.jpg"] + [
        f"gs://{bucket.name}/{k}" for k in good_keys
    ]
    with ThreadPoolExecutor(len(urls)) as pool:
        responses = list(pool.map(lambda url: predict_url(gcs_stack, url), urls))
    broken, *good = responses
    assert broken.status_code == 422
    assert broken.json()["error"]["code"] == "corrupt_image"
    job = requests.get(gcs_stack.url(f"/jobs/{broken.json()['job_id']}"), timeout=TIMEOUT).json()
    assert job["status"] == "failed" and "decoded" in job["error"]["message"]
    assert [r.status_code for r in good] == [200] * len(good)
    assert requests.get(gcs_stack.url("/health"), timeout=1).status_code == 200


def test_downloaded_copies_expire_unless_used_and_the_bucket_keeps_its_object(
    gcs_emulator, bucket, tmp_path
):
    storage = GCSStorage(gcs_emulator.bucket, tmp_path / "cache", timeout_s=5)
    put(bucket, "datasets/d.zip", b"zip bytes")
    day_ago = time.time() - 24 * 3600

    copy = storage.local_path("datasets/d.zip")
    os.utime(copy, (day_ago - 1, day_ago - 1))
    storage.local_path("datasets/d.zip")  # used again: kept
    assert storage.prune(24 * 3600) == 0

    os.utime(copy, (day_ago - 1, day_ago - 1))
    assert storage.prune(24 * 3600) == 1
    assert not copy.exists()
    assert bucket.get_blob("datasets/d.zip") is not None
    assert storage.local_path("datasets/d.zip").read_bytes() == b"zip bytes"


@pytest.fixture
def silent_bucket(monkeypatch):
    """A bucket endpoint that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{listener.getsockname()[1]}")
        yield


def test_a_bucket_that_does_not_answer_gives_a_503_within_seconds(settings, silent_bucket):
    bounded = replace(settings, gcs_bucket="silent", storage_timeout_s=1)
    client = create_app({"TESTING": True, "SETTINGS": bounded}).test_client()
    started = time.monotonic()
    by_url = client.post("/predict", json={"url": "gs://silent/photo.jpg"})
    by_file = client.post("/predict", data={"file": (io.BytesIO(photo()), "p.jpg")})
    for response in (by_url, by_file):
        assert response.status_code == 503, response.get_json()
        assert response.get_json()["error"]["code"] == "storage_unavailable"
        assert response.headers["Retry-After"] == "5"
    # Bounded, not a hang: each call gives up after its timeouts (it took 90-110 s before).
    assert time.monotonic() - started < 15
