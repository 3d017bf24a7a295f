"""Upload, validate, activate and roll back a model under load, with two real workers.

No job may fail, and every answer must come whole from one version: each prediction's
confidence is checked against that version's own output for the image, and every
chunk of an evaluation that spans a rollback must come from the version it began on.
"""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from redis import Redis

from common.jobs import JobStore, utc_now
from common.labels import CLASSES
from common.model_metadata import ModelMetadata, metadata_path_for
from common.preprocessing import preprocess
from common.processes import wait_until
from common.settings import DEFAULT_MODEL_PATH
from tests.conftest import photo, run_stack
from tests.test_evaluate import dataset_zip, finished_job
from worker.runtime import load_runtime

KEY = "swap-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CLIENTS = 3
TIMEOUT = 180
IMAGES = [photo(label, seed=40 + i) for i, label in enumerate(CLASSES)]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def swap_stack(redis_url, tmp_path_factory):
    yield from run_stack(
        redis_url.rsplit("/", 1)[0] + "/3",
        tmp_path_factory.mktemp("swap-stack"),
        {"ADMIN_API_KEY": KEY, "EVAL_CHUNK_SIZE": "8", "HEARTBEAT_INTERVAL_S": "1"},
        workers=2,
    )


@pytest.fixture(scope="module")
def second_model(tmp_path_factory):
    """A real, different model: the demo CNN with its last layer's weights halved."""
    import keras

    model = keras.models.load_model(DEFAULT_MODEL_PATH, compile=False)
    kernel, bias = model.layers[-1].get_weights()
    model.layers[-1].set_weights([kernel * 0.5, bias])
    path = tmp_path_factory.mktemp("model-b") / "b.keras"
    model.save(path)
    metadata = ModelMetadata.of_file(path, "demo-2", "The demo CNN with flatter probabilities.")
    metadata.write_for(path)
    return path


def expected_confidences(path, version: str) -> dict[tuple[int, str], tuple[str, float]]:
    runtime = load_runtime(path)
    size, spec = runtime.metadata.input_size, runtime.metadata.preprocessing
    batch = np.stack([preprocess(image, size, spec) for image in IMAGES])
    rows = runtime.predict(batch)
    return {
        (i, version): (CLASSES[int(row.argmax())], float(row.max()) * 100)
        for i, row in enumerate(rows)
    }


def wait_for_workers_on(stack, version: str) -> None:
    wait_until(
        lambda: (
            {w["model_version"] for w in stack.live_workers()} == {version}
            and len(stack.live_workers()) == 2
        ),
        TIMEOUT,
        f"every worker on {version}",
    )


def refuse_a_broken_model(stack) -> None:
    """A truncated model fails validation in the worker and cannot be activated."""
    metadata = json.loads(metadata_path_for(DEFAULT_MODEL_PATH).read_text())
    metadata.update(version="broken-1", sha256=None)
    uploaded = requests.post(
        stack.url("/models"),
        files={
            "model": ("broken.h5", DEFAULT_MODEL_PATH.read_bytes()[:20_000]),
            "metadata": ("broken.json", json.dumps(metadata)),
        },
        headers=AUTH,
        timeout=TIMEOUT,
    )
    assert uploaded.status_code == 202, uploaded.text
    validation = finished_job(stack, uploaded.json()["job_id"])
    assert validation["status"] == "failed"
    assert validation["error"]["code"] == "invalid_model"
    assert "does not load" in validation["error"]["message"]
    described = requests.get(stack.url("/models/broken-1"), headers=AUTH, timeout=10).json()
    assert described["state"] == "invalid"
    refused = requests.put(
        stack.url("/models/active"), json={"version": "broken-1"}, headers=AUTH, timeout=10
    )
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "model_invalid"


def test_activation_and_rollback_under_load(swap_stack, second_model):
    stack = swap_stack
    stop, answers = threading.Event(), []

    def client(n: int) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                index = (n + len(answers)) % len(IMAGES)
                response = session.post(
                    stack.url("/predict?wait=30"),
                    files={"file": ("p.jpg", IMAGES[index])},
                    timeout=TIMEOUT,
                )
                answers.append((index, response.status_code, response.json()))

    with ThreadPoolExecutor(CLIENTS) as load:
        for n in range(CLIENTS):
            load.submit(client, n)
        try:
            refuse_a_broken_model(stack)
            uploaded = requests.post(
                stack.url("/models"),
                files={
                    "model": ("b.keras", second_model.read_bytes()),
                    "metadata": ("b.keras.json", metadata_path_for(second_model).read_bytes()),
                },
                headers=AUTH,
                timeout=TIMEOUT,
            )
            assert uploaded.status_code == 202, uploaded.text
            validation = finished_job(stack, uploaded.json()["job_id"])
            assert validation["status"] == "succeeded", validation
            assert validation["result"]["checks"]["classes"] == len(CLASSES)

            activated = requests.put(
                stack.url("/models/active"), json={"version": "demo-2"}, headers=AUTH, timeout=10
            )
            # The notice is a shortcut; the pointer itself is what workers follow.
            assert activated.json()["active"] == "demo-2"
            assert activated.json()["previous"] == "demo-1"
            wait_for_workers_on(stack, "demo-2")
            assert requests.get(stack.url("/model-info"), timeout=10).json()["version"] == "demo-2"

            evaluation = requests.post(
                stack.url("/evaluate"), files={"file": ("d.zip", dataset_zip(per_class=150))},
                timeout=TIMEOUT,
            ).json()  # fmt: skip
            wait_until(
                lambda: (
                    requests.get(stack.url(f"/jobs/{evaluation['job_id']}"), timeout=10).json()[
                        "status"
                    ]
                    != "queued"
                ),
                TIMEOUT,
                "evaluation start",
            )
            rolled_back = requests.post(stack.url("/models/rollback"), headers=AUTH, timeout=10)
            assert rolled_back.json()["active"] == "demo-1", rolled_back.text
            wait_for_workers_on(stack, "demo-1")
            switched_back_at = utc_now()
            evaluated = finished_job(stack, evaluation["job_id"])
        finally:
            stop.set()  # also on a failure, or the load threads would run forever

    # The evaluation began on demo-2 and every one of its chunks was classified by it,
    # although demo-1 was active again before it finished.
    assert evaluated["status"] == "succeeded", evaluated
    assert evaluated["result"]["model_version"] == "demo-2"
    jobs = JobStore(Redis.from_url(stack.redis_url), 60)
    outcomes = jobs.chunk_outcomes(evaluation["job_id"])
    assert len(outcomes) == int(jobs.get(evaluation["job_id"])["chunks_total"]) > 10
    assert {outcome["model_version"] for outcome in outcomes} == {"demo-2"}
    # ...including chunks classified after every worker served demo-1 again.
    assert any(outcome["classified_at"] > switched_back_at for outcome in outcomes)

    # Every prediction succeeded, both versions answered, and each answer is exactly
    # what its own version says about that image.
    expected = expected_confidences(DEFAULT_MODEL_PATH, "demo-1") | expected_confidences(
        second_model, "demo-2"
    )
    assert answers and all(status == 200 for _, status, _ in answers), answers[:3]
    versions = {body["model_version"] for _, _, body in answers}
    assert versions == {"demo-1", "demo-2"}
    for index, _, body in answers:
        label, confidence = expected[(index, body["model_version"])]
        assert body["label"] == label
        assert body["confidence"] == pytest.approx(confidence, abs=0.06)
    history = requests.get(stack.url("/models"), headers=AUTH, timeout=10).json()["history"]
    assert [entry["version"] for entry in history] == ["demo-1", "demo-2", "demo-1"]
