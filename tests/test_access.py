"""Admission and access on a real stack (Redis, a worker, gunicorn with two processes):
API keys and job ownership, rate limits shared by the API processes, the bounded
photo queue and evaluation limit, safe photo serving, JSON for gunicorn's own errors.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from api.access import ApiKeys
from common.model_metadata import ModelMetadata
from common.processes import wait_until
from common.settings import Settings
from tests.conftest import photo, run_stack
from tests.test_evaluate import dataset_zip
from worker.runtime import load_runtime

TIMEOUT = 60
KEYS = {name: f"{name}-secret-key-0123456789" for name in ("alice", "bob", "carol", "dave")}
ADMIN_KEY = "admin-secret-key-0123456789"
QUEUE_BOUND = 8
PHOTO_LIMIT = 40  # per key, per 10 s window


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


@pytest.fixture(scope="module")
def keyed_stack(redis_url, tmp_path_factory):
    yield from run_stack(
        redis_url.rsplit("/", 1)[0] + "/12",
        tmp_path_factory.mktemp("keyed-stack"),
        {
            "API_KEYS": ",".join(f"{name}={key}" for name, key in KEYS.items()),
            "ADMIN_API_KEY": ADMIN_KEY,
            "RATE_LIMIT_PHOTOS": f"{PHOTO_LIMIT} per 10 second",
            "MAX_QUEUED_PHOTOS": str(QUEUE_BOUND),
            "MAX_EVALUATIONS": "2",
        },
        api_processes=2,
    )


def post_photo(stack, name: str, data: bytes | None = None, wait: int = 0, **headers):
    return requests.post(
        stack.url(f"/predict?wait={wait}"),
        files={"file": ("p.jpg", data or photo())},
        headers=auth(name) | headers,
        timeout=TIMEOUT,
    )


def post_dataset(stack, name: str):
    return requests.post(stack.url("/evaluate"), headers=auth(name),
                         files={"file": ("d.zip", dataset_zip())}, timeout=TIMEOUT)  # fmt: skip


@contextmanager
def frozen_worker(stack) -> Iterator[None]:
    """The stack's worker stopped (SIGSTOP) for a while: what is sent waits in the queue."""
    (pid,) = {worker["pid"] for worker in stack.live_workers()}
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def finished(stack, name: str, job_id: str) -> bool:
    record = requests.get(stack.url(f"/jobs/{job_id}"), headers=auth(name), timeout=5).json()
    return record["status"] in ("succeeded", "failed", "cancelled")


def test_without_a_known_key_nothing_is_accepted(keyed_stack):
    for headers in ({}, {"Authorization": "Bearer not-a-key-of-anyone"}):
        response = requests.post(keyed_stack.url("/predict"), files={"file": ("p.jpg", photo())},
                                 headers=headers, timeout=TIMEOUT)  # fmt: skip
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] in ("missing_api_key", "invalid_api_key")
    # Health and the model's description need no key.
    assert requests.get(keyed_stack.url("/health"), timeout=5).status_code == 200
    assert requests.get(keyed_stack.url("/model-info"), timeout=5).status_code == 200


def test_a_job_is_visible_only_to_the_key_that_made_it(keyed_stack):
    answer = post_photo(keyed_stack, "alice", wait=20)
    assert answer.status_code == 200, answer.text
    job_id, image_url = answer.json()["job_id"], answer.json()["image_url"]
    evaluation = post_dataset(keyed_stack, "alice")
    assert evaluation.status_code == 202, evaluation.text
    eval_id = evaluation.json()["job_id"]
    wait_until(lambda: finished(keyed_stack, "alice", eval_id), TIMEOUT, "alice's evaluation")
    for owner, status in (("alice", 200), ("bob", 404)):
        headers = auth(owner)
        assert requests.get(keyed_stack.url(f"/jobs/{job_id}"), headers=headers,
                            timeout=5).status_code == status  # fmt: skip
        assert requests.get(image_url, headers=headers, timeout=5).status_code == status
        confusion = keyed_stack.url(f"/jobs/{eval_id}/confusion.png")
        assert requests.get(confusion, headers=headers, timeout=5).status_code == status
    # Bob cannot cancel (or learn anything of) Alice's evaluation, finished or not.
    cancel = requests.delete(keyed_stack.url(f"/jobs/{eval_id}"), headers=auth("bob"), timeout=5)
    assert cancel.status_code == 404 and cancel.json()["error"]["code"] == "job_not_found"
    assert requests.get(image_url, timeout=5).status_code == 401


def test_a_photo_is_served_safely_and_only_its_own_bytes(keyed_stack):
    page = b"<html><script>alert(document.cookie)</script></html>"
    answer = post_photo(keyed_stack, "alice", photo(seed=3) + page, wait=20, Host="evil.example")
    assert answer.status_code == 200, answer.text
    image_url = answer.json()["image_url"]
    # Built from the configured public address, never from the request's Host header.
    assert image_url.startswith(keyed_stack.base_url + "/uploads/") and "evil" not in image_url
    served = requests.get(image_url, headers=auth("alice"), timeout=5)
    assert served.status_code == 200
    assert served.content == photo(seed=3), "what followed the JPEG's end is not stored"
    assert served.headers["Content-Type"] == "image/jpeg"
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert served.headers["Cache-Control"].startswith("private")
    record = requests.get(keyed_stack.url(f"/jobs/{answer.json()['job_id']}"),
                          headers=auth("alice"), timeout=5).json()  # fmt: skip
    assert "evil" not in str(record)
    queued = post_photo(keyed_stack, "alice", photo(seed=4), Host="evil.example")
    assert queued.status_code == 202, queued.text
    assert queued.json()["status_url"].startswith(keyed_stack.base_url + "/jobs/")


def test_rate_limits_are_shared_by_the_api_processes(keyed_stack):
    """Two gunicorn processes, one Redis counter: 60 requests against a limit of 40."""
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: post_photo(keyed_stack, "dave"), range(60)))
    statuses = [answer.status_code for answer in answers]
    # Past the limiter, a photo is queued (202) or finds the small queue full (503).
    assert len(statuses) - statuses.count(429) == PHOTO_LIMIT, statuses
    limited = [answer for answer in answers if answer.status_code == 429]
    assert all(a.json()["error"]["code"] == "rate_limited" for a in limited)
    # A sliding window lets a request through again within two windows at most.
    assert all(1 <= int(a.headers["Retry-After"]) <= 20 for a in limited), [
        a.headers["Retry-After"] for a in limited
    ]
    # Another key has its own budget (its photo may still find the small queue full).
    assert post_photo(keyed_stack, "bob").status_code in (202, 503)


def test_a_burst_beyond_the_queue_bound_is_refused_and_what_was_accepted_finishes(keyed_stack):
    uploads = keyed_stack.var_dir / "uploads"
    stored_before = len(list(uploads.glob("*")))
    with frozen_worker(keyed_stack), ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: post_photo(keyed_stack, "carol"), range(30)))
    accepted = [a.json()["job_id"] for a in answers if a.status_code == 202]
    refused = [a for a in answers if a.status_code == 503]
    assert len(accepted) + len(refused) == 30, [a.status_code for a in answers]
    # Near the bound the queue's length is read for every photo: it is overshot by at
    # most the photos being accepted at that moment (6 clients).
    assert QUEUE_BOUND <= len(accepted) <= QUEUE_BOUND + 6
    assert all(a.json()["error"]["code"] == "overloaded" for a in refused)
    assert all(int(a.headers["Retry-After"]) >= 1 for a in refused)
    # A refused photo is not stored.
    assert len(list(uploads.glob("*"))) == stored_before + len(accepted)
    for job_id in accepted:
        wait_until(lambda j=job_id: finished(keyed_stack, "carol", j), TIMEOUT, "accepted job")


def test_evaluations_queued_or_running_at_once_are_limited(keyed_stack):
    with frozen_worker(keyed_stack):
        first, second, third = (post_dataset(keyed_stack, "bob") for _ in range(3))
    assert (first.status_code, second.status_code, third.status_code) == (202, 202, 429)
    assert third.json()["error"]["code"] == "too_many_evaluations"
    assert int(third.headers["Retry-After"]) > 0
    for answer in (first, second):
        job_id = answer.json()["job_id"]
        wait_until(lambda j=job_id: finished(keyed_stack, "bob", j), TIMEOUT, "an evaluation")
    assert post_dataset(keyed_stack, "bob").status_code == 202  # a place is free again


def raw_request(stack, head: bytes) -> tuple[int, dict]:
    """Send ``head`` as is and parse the answer's status and JSON body."""
    port = int(stack.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(head)
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in headers.lower()
    return int(status_line.split()[1]), json.loads(body)


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /jobs/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
    ],
    ids=["long-request-line", "long-header", "malformed-header"],
)
def test_errors_gunicorn_answers_itself_are_json(keyed_stack, head, status):
    answered, body = raw_request(keyed_stack, head)
    assert answered == status and body["error"]["code"] and body["error"]["message"]


def test_a_body_too_large_by_its_content_length_is_refused_before_it_is_read(keyed_stack):
    head = (b"POST /predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEYS["alice"].encode()
            + b"\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            + b"Content-Length: 2000000000\r\n\r\n--b\r\n")  # fmt: skip
    status, body = raw_request(keyed_stack, head)  # answered without the 2 GB body
    assert (status, body["error"]["code"]) == (413, "file_too_large")


def test_keys_are_read_from_a_file_and_a_malformed_entry_stops_the_api(tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text("# name=key, one per line\nalice = alice-secret-key-0123456789\n")
    keys = ApiKeys.from_settings(Settings(api_keys="bob=bob-secret-key-01234567",
                                          api_keys_file=keys_file))  # fmt: skip
    assert keys.name_of("alice-secret-key-0123456789") == "alice"
    assert keys.name_of("bob-secret-key-01234567") == "bob"
    assert keys.name_of("alice-secret-key-012345678") is None
    assert ApiKeys.from_settings(Settings()) is None  # keys off
    for entry in ("short=tooshort", "no key at all", "bad name=bad-name-key-0123456789"):
        with pytest.raises(ValueError, match="entry 1") as caught:
            ApiKeys.from_settings(Settings(api_keys=entry))
        key = entry.partition("=")[2]
        assert not key or key not in str(caught.value), "a key is never shown"


def lambda_model(folder: Path, marker: Path, suffix: str) -> Path:
    """A model whose Lambda layer runs a shell command: what a hostile upload carries."""
    import keras

    inputs = keras.Input((128, 128, 3))
    # Built from source so that the marker's path is a constant of the function's code.
    runs_a_command = eval(f'lambda t: (__import__("os").system("touch {marker}"), t)[1]')
    hostile = keras.layers.Lambda(runs_a_command)(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(hostile)
    model = keras.Model(inputs, keras.layers.Dense(6, activation="softmax")(pooled))
    marker.unlink(missing_ok=True)  # building it ran the function once, here
    path = folder / f"hostile{suffix}"
    model.save(path)
    return path


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_model_with_a_lambda_layer_is_refused_without_running_its_code(
    keyed_stack, tmp_path, suffix
):
    marker = tmp_path / "ran"
    path = lambda_model(tmp_path, marker, suffix)
    version = f"hostile-{suffix[1:]}"
    metadata = ModelMetadata.of_file(path, version, "A Lambda layer that runs a shell command.")
    metadata.write_for(path)
    with pytest.raises(ValueError, match="Lambda"):
        load_runtime(path)  # the loader every worker path uses (serving, validation)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    upload = requests.post(
        keyed_stack.url("/models"),
        files={"model": (path.name, path.read_bytes()),
               "metadata": (None, json.dumps(metadata.to_fields()))},
        headers=admin, timeout=TIMEOUT,
    )  # fmt: skip
    assert upload.status_code == 202, upload.text
    job_url = upload.json()["status_url"]

    def validated() -> dict:
        return requests.get(job_url, headers=admin, timeout=5).json()

    wait_until(lambda: validated()["status"] in ("succeeded", "failed"), TIMEOUT, "validation")
    assert validated()["error"]["code"] == "invalid_model"
    described = requests.get(keyed_stack.url(f"/models/{version}"), headers=admin, timeout=5)
    assert described.json()["state"] == "invalid" and "Lambda" in str(described.json())
    assert not marker.exists(), "the model's code ran"
