"""Over HTTP against gunicorn, a real Celery worker process and a real Redis."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from celery import Celery
from redis import Redis

from bench.procfs import loads_tensorflow
from common.jobs import JobStore
from common.labels import CLASSES, suggestion
from common.messages import Predict
from common.model_metadata import ModelMetadata, file_sha256
from common.processes import wait_until
from common.settings import DEFAULT_MODEL_PATH, Settings
from tests.conftest import damaged_png, photo, run_stack
from worker.celery import celery_config

TIMEOUT = 60


def predict(stack, data: bytes, query: str = "?wait=20", name: str = "photo.jpg"):
    return requests.post(
        stack.url(f"/predict{query}"), files={"file": (name, data)}, timeout=TIMEOUT
    )


def assert_seed_contract(body: dict, lang: str = "id") -> None:
    assert body["label"] in CLASSES
    assert isinstance(body["confidence"], float) and 0 < body["confidence"] <= 100
    assert round(body["confidence"], 1) == body["confidence"]
    assert body["suggestion"] == suggestion(body["label"], lang)
    assert body["image_url"].startswith("http")
    assert body["model_version"] == ModelMetadata.for_model(DEFAULT_MODEL_PATH).version
    top = body["top_k"]
    assert len(top) == 3 and top[0]["label"] == body["label"]
    assert [t["confidence"] for t in top] == sorted((t["confidence"] for t in top), reverse=True)


def test_predict_with_wait_returns_the_seed_contract(stack):
    response = predict(stack, photo("Kardus", seed=11))
    assert response.status_code == 200, response.text
    body = response.json()
    assert_seed_contract(body)
    stored = requests.get(body["image_url"], timeout=TIMEOUT)
    assert stored.status_code == 200 and stored.content == photo("Kardus", seed=11)
    assert "photo" not in body["image_url"], "stored names are generated, not the client's"


def test_english_suggestions(stack):
    response = predict(stack, photo("Logam", seed=3), "?wait=20&lang=en")
    assert response.status_code == 200
    assert_seed_contract(response.json(), lang="en")


def test_predict_without_wait_is_queued_then_pollable(stack):
    response = predict(stack, photo("Kaca", seed=5), query="")
    assert response.status_code == 202
    queued = response.json()
    assert queued["status"] in {"queued", "running", "succeeded"}
    status_url = queued["status_url"]
    assert status_url.endswith(f"/jobs/{queued['job_id']}")

    def finished() -> bool:
        return requests.get(status_url, timeout=TIMEOUT).json()["status"] == "succeeded"

    wait_until(finished, TIMEOUT, "job")
    job = requests.get(status_url, timeout=TIMEOUT).json()
    assert job["kind"] == "predict"
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]
    assert_seed_contract(job["result"])
    assert job["result"]["job_id"] == queued["job_id"]


def test_the_demo_model_recognises_fresh_synthetic_photos(stack):
    labels = [label for label in CLASSES for _ in range(3)]
    images = [photo(label, seed=1000 + i) for i, label in enumerate(labels)]
    with ThreadPoolExecutor(len(images)) as pool:
        bodies = list(pool.map(lambda data: predict(stack, data).json(), images))
    correct = sum(body["label"] == label for body, label in zip(bodies, labels, strict=True))
    assert correct >= 0.8 * len(labels), [b["label"] for b in bodies]


def test_concurrent_requests_each_get_their_own_answer(stack):
    images = [photo(CLASSES[i % 6], seed=200 + i) for i in range(24)]
    with ThreadPoolExecutor(24) as pool:
        responses = list(pool.map(lambda data: predict(stack, data), images))
    assert all(r.status_code == 200 for r in responses)
    job_ids = {r.json()["job_id"] for r in responses}
    assert len(job_ids) == 24


def test_health_names_live_workers_with_their_model(stack):
    response = requests.get(stack.url("/health"), timeout=1)
    assert response.status_code == 200
    body = response.json()
    assert body["redis"] == "up"
    assert (
        body["workers"][0]["model_version"] == ModelMetadata.for_model(DEFAULT_MODEL_PATH).version
    )
    # DEVICE=auto on this machine (no GPU): the CPU, and the worker says why.
    assert body["workers"][0]["device"] == "cpu"
    assert body["workers"][0]["device_reason"].startswith("auto:")


def test_model_info_matches_the_shipped_model(stack):
    body = requests.get(stack.url("/model-info"), timeout=TIMEOUT).json()
    assert body["model"] == "Keras (.h5)"
    assert body["input_size"] == "128x128 pixels"
    assert body["output_classes"] == ["Kaca", "Logam", "Kertas", "Residu", "Kardus", "Plastik"]
    assert body["description"]
    assert body["sha256"] == file_sha256(DEFAULT_MODEL_PATH)
    assert body["version"] == ModelMetadata.for_model(DEFAULT_MODEL_PATH).version


@pytest.mark.parametrize(
    ("data", "status"),
    [(b"", 400), (b"plain text\n" * 9, 415), (photo()[:1000], 400)],
    ids=["empty", "text", "truncated"],
)
def test_bad_uploads_over_http_leave_the_service_serving(stack, data, status):
    response = predict(stack, data)
    assert response.status_code == status
    assert response.json()["error"]["message"]
    assert predict(stack, photo()).status_code == 200


def test_a_malformed_message_fails_its_job_in_a_real_worker(stack):
    """A message from a sender of another release: its job ends with a clear error,
    and a photo sent beside it is answered."""
    sender = Celery("other-release", set_as_current=False)
    sender.conf.update(celery_config(Settings(redis_url=stack.redis_url)))
    jobs = JobStore(Redis.from_url(stack.redis_url), 60)
    job_id = jobs.create("predict", Predict(photos=[]))
    malformed = {"job_id": job_id, "image_key": "uploads/x.jpg", "lang": "id", "reply_to": ""}
    sender.send_task(Predict.task, kwargs={"photos": [malformed]}, task_id=None)
    beside = predict(stack, photo(seed=4))

    def job() -> dict:
        return requests.get(stack.url(f"/jobs/{job_id}"), timeout=TIMEOUT).json()

    wait_until(lambda: job()["status"] == "failed", TIMEOUT, "malformed job")
    error = job()["error"]
    assert error["code"] == "malformed_message" and "missing image_url" in error["message"]
    assert beside.status_code == 200
    sender.close()


def test_workers_serve_the_checked_onnx_copy_without_tensorflow(stack):
    """The shipped Keras model is converted once in a child process: the worker
    processes themselves never import TensorFlow."""
    workers = stack.live_workers()
    assert workers and all(worker["runtime"] == "OnnxRuntime" for worker in workers)
    assert not any(loads_tensorflow(worker["pid"]) for worker in workers)


def test_damage_inside_a_whole_photo_fails_its_job_with_corrupt_image(stack):
    """The API checks a photo's header and end only; the worker's decode finds the rest."""
    response = predict(stack, damaged_png(), name="damaged.png")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "corrupt_image"
    assert predict(stack, photo()).status_code == 200


@pytest.fixture(scope="module")
def slow_timer_stack(redis_url, tmp_path_factory):
    """A stack whose batch timer would hold a photo for a minute."""
    yield from run_stack(
        redis_url.rsplit("/", 1)[0] + "/5",
        tmp_path_factory.mktemp("slow-timer"),
        {"BATCH_MAX_WAIT_MS": "60000"},
    )


def test_a_lone_photo_does_not_wait_for_the_batch_timer(slow_timer_stack):
    for seed in range(3):
        response = predict(slow_timer_stack, photo(seed=seed), "?wait=20")
        assert response.status_code == 200, response.text


def test_a_worker_serving_both_queues_makes_the_api_ready(stack):
    wait_until(
        lambda: requests.get(stack.url("/readyz"), timeout=2).status_code == 200, 30, "ready"
    )
    assert requests.get(stack.url("/livez"), timeout=2).json() == {"status": "ok"}
    [worker] = stack.live_workers()
    assert worker["queues"] == ["evaluate", "predict"]
