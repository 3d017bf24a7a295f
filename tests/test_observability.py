"""Metrics and logs of a real stack (two gunicorn processes, a worker with its own
metrics port): the counts scraped after real predictions, and a request's id followed
from its answer into the API's and the worker's JSON log lines."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from common.labels import CLASSES
from common.processes import free_port, wait_until
from tests.conftest import photo, run_stack

TIMEOUT = 60


@pytest.fixture(scope="module")
def observed_stack(redis_url, tmp_path_factory):
    port = free_port()
    for stack in run_stack(
        redis_url.rsplit("/", 1)[0] + "/7", tmp_path_factory.mktemp("observed"),
        {"WORKER_METRICS_PORT": str(port)}, api_processes=2,
    ):  # fmt: skip
        stack.worker_metrics = f"http://127.0.0.1:{port}/metrics"
        yield stack


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a metrics page, by name and labels."""
    text = requests.get(url, timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict, name: str, **labels: str) -> float:
    return sum(value for (sample, found), value in samples.items()
               if sample == name and labels.items() <= dict(found).items())  # fmt: skip


def test_metrics_count_what_was_done(observed_stack):
    api, worker = observed_stack.url("/metrics"), observed_stack.worker_metrics
    before_api, before_worker = scrape(api), scrape(worker)

    def predict(seed: int) -> requests.Response:
        files = {"file": ("p.jpg", photo(seed=seed))}
        return requests.post(observed_stack.url("/predict?wait=20"), files=files, timeout=TIMEOUT)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(predict, range(12)))
    assert all(answer.status_code == 200 for answer in answers)
    bad = requests.post(observed_stack.url("/predict"), files={"file": ("p.jpg", b"")},
                        timeout=TIMEOUT)  # fmt: skip
    assert bad.status_code == 400
    after_api = scrape(api)

    def grew(samples_after, samples_before, name, **labels) -> float:
        return total(samples_after, name, **labels) - total(samples_before, name, **labels)

    # Both gunicorn processes' counts, added up.
    assert grew(after_api, before_api, "ecosnap_http_requests_total", route="/predict",
                status="200") == 12  # fmt: skip
    assert grew(after_api, before_api, "ecosnap_http_requests_total", route="/predict",
                status="400") == 1  # fmt: skip
    assert grew(after_api, before_api, "ecosnap_http_request_seconds_count",
                route="/predict") == 13  # fmt: skip
    assert grew(after_api, before_api, "ecosnap_jobs_accepted_total", kind="predict") == 12
    assert ("ecosnap_queue_jobs", (("queue", "predict"),)) in after_api

    wait_until(lambda: grew(scrape(worker), before_worker, "ecosnap_predictions_total") == 12,
               TIMEOUT, "the worker's counts")  # fmt: skip
    after_worker = scrape(worker)
    labels = [answer.json()["label"] for answer in answers]
    for label in set(labels):
        assert grew(after_worker, before_worker, "ecosnap_predictions_total",
                    label=label) == labels.count(label)  # fmt: skip
    assert grew(after_worker, before_worker, "ecosnap_confidence_count") == 12
    assert grew(after_worker, before_worker, "ecosnap_batch_size_sum") == 12
    assert grew(after_worker, before_worker, "ecosnap_inference_seconds_count") >= 1
    assert grew(after_worker, before_worker, "ecosnap_jobs_finished_total", kind="predict",
                status="succeeded") == 12  # fmt: skip
    (served,) = [dict(found) for (name, found), value in after_worker.items()
                 if name == "ecosnap_model_info" and value == 1]  # fmt: skip
    assert served["device"] == "cpu" and served["version"] == answers[0].json()["model_version"]
    assert set(labels) <= set(CLASSES)


def json_lines(path) -> list[dict]:
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_a_request_id_is_followed_from_the_answer_into_both_logs(observed_stack):
    answer = requests.post(observed_stack.url("/predict?wait=20"),
                           files={"file": ("p.jpg", photo(seed=77))},
                           headers={"X-Request-ID": "trace-77"}, timeout=TIMEOUT)  # fmt: skip
    assert answer.headers["X-Request-ID"] == "trace-77"
    job_id = answer.json()["job_id"]
    made = requests.get(observed_stack.url("/health"), timeout=5)
    assert len(made.headers["X-Request-ID"]) == 32  # none sent: one is made

    api_log, worker_log = observed_stack.logs[-1], observed_stack.logs[0]

    def api_line() -> list[dict]:
        return [line for line in json_lines(api_log) if line.get("request_id") == "trace-77"]

    wait_until(lambda: api_line(), 10, "the API's line")
    (line,) = api_line()
    assert line["service"] == "api" and line["route"] == "/predict" and line["status"] == 200
    assert line["job_id"] == job_id
    assert {"time", "level", "ms"} <= line.keys()

    def worker_line() -> list[dict]:
        return [line for line in json_lines(worker_log) if job_id in line.get("jobs", [])]

    wait_until(lambda: worker_line(), 10, "the worker's line")
    (line,) = worker_line()
    assert line["service"] == "worker" and line["request_ids"] == ["trace-77"]
    assert line["model_version"] == answer.json()["model_version"]
    assert line["batch_size"] >= 1 and line["inference_ms"] >= 0
