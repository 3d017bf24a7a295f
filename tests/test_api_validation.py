"""Bad input through the Flask app on a real Redis: each a clear JSON 4xx.

No worker is needed: every request here is refused before a job is enqueued, except
the last, which shows the app still accepts good work afterwards.
"""

import io
from dataclasses import replace

import pytest
from PIL import Image

from api import create_app, services
from common.heartbeat import beat
from common.processes import free_port
from tests.conftest import encoded, photo


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"]["code"] == code
    assert body["error"]["message"]


def post_file(client, data: bytes, filename: str = "photo.jpg", query: str = ""):
    return client.post(
        f"/predict{query}",
        data={"file": (io.BytesIO(data), filename)},
        content_type="multipart/form-data",
    )


@pytest.mark.parametrize(
    ("data", "filename", "status", "code"),
    [
        (b"", "empty.jpg", 400, "empty_file"),
        (b"not a photo at all\n" * 20, "notes.jpg", 415, "unsupported_media_type"),
        (photo()[:2000], "cut.jpg", 400, "corrupt_image"),
        (encoded(Image.new("RGB", (32, 32)), "GIF"), "anim.gif", 415, "unsupported_media_type"),
    ],
    ids=["empty", "text-named-jpg", "truncated-jpeg", "gif"],
)
def test_bad_uploads_are_refused(client, data, filename, status, code):
    assert_error(post_file(client, data, filename), status, code)


def test_upload_over_the_size_limit_is_413(settings):
    app = create_app({"TESTING": True, "SETTINGS": replace(settings, max_upload_mb=0.05)})
    big = photo(size=(1200, 900))
    assert len(big) > 0.05 * 1024 * 1024
    assert_error(post_file(app.test_client(), big), 413, "file_too_large")


def test_request_body_far_over_the_limit_is_413_json(settings):
    app = create_app({"TESTING": True, "SETTINGS": replace(settings, max_upload_mb=0.01)})
    response = post_file(app.test_client(), b"\xff" * 200_000)
    assert_error(response, 413, "file_too_large")


def test_missing_field(client):
    assert_error(client.post("/predict"), 400, "missing_field")
    assert_error(client.post("/predict", data={"other": "x"}), 400, "missing_field")


def test_url_without_a_configured_bucket_is_refused(client):
    response = client.post("/predict", json={"url": "gs://somebucket/photo.jpg"})
    assert_error(response, 400, "url_not_allowed")


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "https://example.com/photo.jpg",
        "gs://another-bucket/photo.jpg",
        "https://storage.googleapis.com/another-bucket/photo.jpg",
        "file:///etc/passwd",
        "gs://ecosnap-test/",
    ],
)
def test_urls_outside_the_bucket_are_refused_and_never_fetched(gcs_settings, url):
    client = create_app({"TESTING": True, "SETTINGS": gcs_settings}).test_client()
    assert_error(client.post("/predict", json={"url": url}), 400, "url_not_allowed")
    assert_error(client.post("/predict", data={"url": url}), 400, "url_not_allowed")


def test_file_and_url_together_is_ambiguous(client):
    response = client.post(
        "/predict",
        data={"file": (io.BytesIO(photo()), "a.jpg"), "url": "gs://b/a.jpg"},
        content_type="multipart/form-data",
    )
    assert_error(response, 400, "ambiguous_input")


@pytest.mark.parametrize("body", ["[1, 2]", "{not json", '{"url": 5}', '{"url": ""}'])
def test_bad_json_bodies(client, body):
    response = client.post("/predict", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] in {"invalid_json", "invalid_url"}


@pytest.mark.parametrize("query", ["?wait=31", "?wait=-1", "?wait=soon", "?lang=fr"])
def test_bad_query_parameters(client, query):
    response = post_file(client, photo(), query=query)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] in {"invalid_wait", "invalid_lang"}


@pytest.mark.parametrize("job_id", ["0" * 32, "not-a-job", "0" * 31, "A" * 32, "g" * 32])
def test_unknown_or_malformed_job_ids_are_404(client, job_id):
    assert_error(client.get(f"/jobs/{job_id}"), 404, "job_not_found")


def test_unknown_route_and_method_are_json(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/predict"), 405, "method_not_allowed")


def test_uploads_route_refuses_names_it_did_not_generate(client):
    assert_error(client.get("/uploads/..%2Fsecret.jpg"), 404, "not_found")
    assert_error(client.get("/uploads/photo.jpg"), 404, "not_found")


def test_uploads_route_serves_photos_but_never_a_dataset_zip(app, client):
    with app.app_context():
        storage = services.storage()
        photo_key = storage.save(photo(), "jpg", "image/jpeg")
        zip_key = storage.save(b"PK\x03\x04 dataset", "zip", "application/zip")

    assert client.get(f"/{photo_key}").status_code == 200
    assert_error(client.get(f"/{zip_key}"), 404, "not_found")


def test_service_keeps_serving_after_bad_input(client):
    post_file(client, b"")
    post_file(client, photo()[:100])
    response = post_file(client, photo())
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "queued"
    job = client.get(f"/jobs/{body['job_id']}").get_json()
    assert job["kind"] == "predict" and job["status"] == "queued"
    assert job["created_at"] and job["finished_at"] is None


def test_requests_while_redis_is_down_get_a_503_with_retry_after(settings):
    """Redis (the job store and the broker) does not answer: a JSON 503, at once."""
    down = replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    client = create_app({"TESTING": True, "SETTINGS": down}).test_client()
    for response in (
        post_file(client, photo(), query="?wait=5"),
        post_file(client, photo()),
        client.get(f"/jobs/{'a' * 32}"),
    ):
        assert response.status_code == 503 and response.headers["Retry-After"] == "5"
        assert response.get_json()["error"]["code"] == "unavailable"


def test_readiness_needs_redis_and_a_live_worker_on_every_queue(app, client, settings):
    with app.app_context():
        redis = services.health_redis()
    for key in redis.scan_iter("ecosnap:worker:*"):
        redis.delete(key)
    assert client.get("/livez").status_code == 200
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.get_json()["down"] == ["workers:predict", "workers:evaluate"]
    beat(redis, "host:1", {"pid": 1, "model_version": "v", "queues": ["predict"]}, 5)
    assert client.get("/readyz").get_json()["down"] == ["workers:evaluate"]
    beat(redis, "host:2", {"pid": 2, "model_version": "v", "queues": ["evaluate"]}, 5)
    assert client.get("/readyz").status_code == 200
    redis.delete("ecosnap:worker:host:1", "ecosnap:worker:host:2")
    down = replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    unreachable = create_app({"TESTING": True, "SETTINGS": down}).test_client()
    assert unreachable.get("/livez").status_code == 200
    assert unreachable.get("/readyz").get_json()["down"] == ["redis"]
