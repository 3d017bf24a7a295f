"""Fault injection with real processes: workers killed, frozen and stopped, Redis killed
and started again on its append-only file, the API stopped with clients waiting, a
bucket that does not answer, and health while every request thread could be waiting.

Each test counts every accepted job's final state and every client's answer
(``tests/faults.py``) and asserts none lost, none answered twice, no client left
without an answer or a job id. ``make reliability`` runs this file and writes what
it measured to ``docs/RELIABILITY.md``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from redis import Redis

from common.messages import EVALUATE_QUEUE
from common.processes import free_port, stop, wait_until
from tests.conftest import photo
from tests.faults import (
    Clients,
    Load,
    Notices,
    Outcome,
    ecosnap_up,
    fault_stack,
    freeze_mid_batch,
    jobs_running_on,
    post_photo,
    settle,
)
from tests.test_evaluate import dataset_zip

pytestmark = pytest.mark.slow

WAIT_S = 10


def seconds_until(condition, timeout_s: float, what: str) -> float:
    started = time.monotonic()
    wait_until(condition, timeout_s, what)
    return round(time.monotonic() - started, 1)


def kept(reliability: list[Outcome], outcome: Outcome) -> None:
    """Record the scenario's row, then check the promises every scenario keeps."""
    reliability.append(outcome)
    outcome.assert_kept()


def test_a_predict_worker_killed_mid_batch_under_ecosnap_up(tmp_path, reliability):
    with ecosnap_up(tmp_path) as up:
        load = Load(Redis.from_url(up.redis_url), up.base_url)
        worker = up.child("predict@")
        in_hand = freeze_mid_batch(load.redis, worker)
        fault_at = time.time()
        os.kill(worker, signal.SIGKILL)
        restarted_s = seconds_until(lambda: up.printed("The predict worker started again"),
                                    30, "the predict worker started again")  # fmt: skip
        outcome = load.outcome(
            "predict worker SIGKILL mid-batch, under `ecosnap up`",
            "the API keeps answering; the worker is started again; its jobs run again "
            "within seconds and are answered once",
            fault_at, jobs_in_its_batch=in_hand, worker_started_again_after_s=restarted_s,
        )  # fmt: skip
    kept(reliability, outcome)
    assert outcome.accepted > 0, outcome
    outcome.assert_recovered()


def test_a_frozen_predict_worker_drops_out_and_its_jobs_go_to_another(tmp_path, reliability):
    with fault_stack(tmp_path) as stack:
        frozen, _ = stack.start_worker("frozen"), stack.start_worker("other")
        stack.start_api()
        stack.wait_for_workers(2)
        load = Load(stack.redis, stack.base_url)
        in_hand = freeze_mid_batch(stack.redis, frozen.pid)
        fault_at = time.time()
        dropped_s = seconds_until(lambda: frozen.pid not in stack.worker_pids(), 15,
                                  "the frozen worker leaving /health")  # fmt: skip
        # Frozen past its lease: what it held runs on the other worker; then it wakes
        # up with a stale batch in hand, which must not answer anything twice.
        wait_until(lambda: jobs_running_on(stack.redis, frozen.pid) == 0, 30,
                   "the frozen worker's jobs run by the other")  # fmt: skip
        os.kill(frozen.pid, signal.SIGCONT)
        outcome = load.outcome(
            "predict worker SIGSTOP until what it held ran on a second worker, then SIGCONT",
            "the frozen worker leaves /health within seconds; what it held runs on the other "
            "worker; when it wakes its stale batch answers nothing twice",
            fault_at, jobs_in_its_batch=in_hand, left_health_after_s=dropped_s,
        )  # fmt: skip
    kept(reliability, outcome)
    assert dropped_s <= 10
    assert outcome.accepted > 0, outcome
    outcome.assert_recovered()


def test_a_predict_worker_stopped_with_sigterm_finishes_or_requeues_its_batch(
    tmp_path, reliability
):
    with fault_stack(tmp_path) as stack:
        stopped, _ = stack.start_worker("stopped"), stack.start_worker("other")
        stack.start_api()
        stack.wait_for_workers(2)
        load = Load(stack.redis, stack.base_url)
        in_hand = freeze_mid_batch(stack.redis, stopped.pid)
        fault_at = time.time()
        stopped.send_signal(signal.SIGTERM)
        os.kill(stopped.pid, signal.SIGCONT)
        exited_s = seconds_until(lambda: stopped.poll() is not None, 60, "the worker to exit")
        outcome = load.outcome(
            "predict worker SIGTERM mid-load (a second worker runs)",
            "the worker answers the batch in hand, puts back what it holds unstarted, and exits",
            fault_at, jobs_in_its_batch=in_hand, exited_after_s=exited_s,
            exit_code=stopped.returncode,
        )  # fmt: skip
    kept(reliability, outcome)
    assert stopped.returncode == 0
    assert outcome.accepted > 0, outcome
    outcome.assert_recovered()


def test_redis_killed_and_started_again_on_its_append_only_file(tmp_path, reliability):
    with fault_stack(tmp_path) as stack:
        worker = stack.start_worker("predict")
        stack.start_api()
        stack.wait_for_workers(1)
        load = Load(stack.redis, stack.base_url)
        fault_at = time.time()
        stack.kill_redis()
        # The load's clients may all be waiting out the outage on jobs sent before it,
        # so a photo of the test's own asks for the refusal.
        started = time.monotonic()
        refusal = requests.post(stack.url("/predict"), files={"file": ("p.jpg", photo())},
                                timeout=10)  # fmt: skip
        refused_s = round(time.monotonic() - started, 1)
        assert refusal.status_code == 503 and "Retry-After" in refusal.headers, refusal.text
        assert refusal.json()["error"]["code"] == "unavailable", refusal.text
        time.sleep(max(0.0, fault_at + 3 - time.time()))  # the outage lasts 3 s
        stack.restart_redis()
        restarted_at = time.time()
        load.clients.wait_for_answers(1, since=restarted_at)
        serving_s = round(time.time() - restarted_at, 1)
        outcome = load.outcome(
            "Redis SIGKILL mid-load, started again 3 s later on the same port and AOF",
            "requests meanwhile get 503 with Retry-After, never a 500 or a hang; accepted "
            "jobs survive in the AOF and finish; the API and worker reconnect by themselves",
            fault_at, first_503_after_s=refused_s, first_result_after_restart_s=serving_s,
        )  # fmt: skip
        assert worker.poll() is None, "the worker rides out the outage without a restart"
    kept(reliability, outcome)
    assert outcome.accepted > 0, outcome
    outcome.assert_recovered()


def test_the_api_stopped_with_clients_waiting_answers_each_of_them(tmp_path, reliability):
    with fault_stack(tmp_path) as stack:
        worker = stack.start_worker("predict")
        stack.start_api()
        stack.wait_for_workers(1)
        notices = Notices(stack.redis)
        os.kill(worker.pid, signal.SIGSTOP)  # every request waits
        clients = Clients(20, post_photo(stack.base_url, photo(), 25), repeat=False)
        wait_until(lambda: len(list(stack.redis.scan_iter("ecosnap:job:*"))) == 20, 30, "jobs")
        fault_at = time.time()
        stack.api.send_signal(signal.SIGTERM)
        refused_s = seconds_until(lambda: refused(stack.url("/livez")), 10, "new work refused")
        os.kill(worker.pid, signal.SIGCONT)  # the waiting requests get their results
        clients.stop()
        api_code = stack.api.wait(60)
        records = settle(stack.redis, clients.job_ids)
        notices.close()
    statuses = sorted({a.status for a in clients.attempts})
    outcome = Outcome.of(
        "API SIGTERM with 20 clients waiting (`?wait=25`)",
        "new connections are refused; every request in hand gets its result, or 202 with "
        "its job id, within the graceful timeout (40 s, longer than the longest wait)",
        clients, records, notices, fault_at, answers=statuses, api_exit_code=api_code,
        new_connections_refused_after_s=refused_s,
    )  # fmt: skip
    kept(reliability, outcome)
    assert api_code == 0 and len(clients.attempts) == 20 and set(statuses) <= {200, 202}
    assert outcome.accepted == 20


def start_emulator(port: int, folder: Path) -> subprocess.Popen:
    """A gcp-storage-emulator on ``port`` keeping its objects in ``folder``, so that one
    started again there finds them (the registry, the photos)."""
    folder.mkdir(exist_ok=True)
    emulator = subprocess.Popen(
        [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
         "--port", str(port), "--default-bucket", "ecosnap-faults"],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_until(lambda: answers(f"http://127.0.0.1:{port}/storage/v1/b"), 30, "the emulator")
    return emulator


@contextmanager
def silent_endpoint(port: int) -> Iterator[None]:
    """The bucket's address accepting connections and never answering."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        yield


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False


def test_a_bucket_that_stops_answering_gives_503s_and_recovers(tmp_path, reliability):
    port, objects = free_port(), tmp_path / "bucket"
    env = {"GCS_BUCKET": "ecosnap-faults", "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}",
           "STORAGE_TIMEOUT_S": "2"}  # fmt: skip
    emulator = start_emulator(port, objects)
    try:
        with fault_stack(tmp_path, env) as stack:
            stack.start_worker("predict")
            stack.start_api()
            stack.wait_for_workers(1)
            notices = Notices(stack.redis)
            stop(emulator)
            fault_at = time.time()
            with silent_endpoint(port):
                silent = Clients(8, post_photo(stack.base_url, photo(), WAIT_S), repeat=False)
                silent.stop()
            # The bucket comes back on the same address: requests succeed, no restart.
            emulator = start_emulator(port, objects)
            back = Clients(1, post_photo(stack.base_url, photo(), WAIT_S))
            wait_until(lambda: any(a.status == 200 for a in back.attempts), 60, "a result")
            back.stop()
            records = settle(stack.redis, back.job_ids)
            notices.close()
    finally:
        stop(emulator)
    assert {(a.status, a.error_code) for a in silent.attempts} == {(503, "storage_unavailable")}, (
        silent.attempts
    )
    slowest = max(a.seconds for a in silent.attempts)
    silent.attempts += back.attempts
    outcome = Outcome.of(
        "bucket (photos and the model registry) stops answering: it accepts and never "
        "answers (`STORAGE_TIMEOUT_S=2`), then comes back",
        "each request gets 503 `storage_unavailable` with Retry-After within about twice "
        "the timeout, nothing is accepted; once the bucket answers, requests succeed",
        silent, records, notices, fault_at, slowest_503_s=round(slowest, 1),
    )  # fmt: skip
    kept(reliability, outcome)
    assert slowest < 4 * 2 + 2


def test_an_evaluate_worker_killed_mid_evaluation(tmp_path, reliability):
    with fault_stack(tmp_path, {"EVAL_CHUNK_SIZE": "4"}) as stack:
        stack.start_worker("predict")
        evaluator = stack.start_worker("evaluate", EVALUATE_QUEUE)
        stack.start_api()
        stack.wait_for_workers(2)
        notices = Notices(stack.redis)
        dataset = dataset_zip(per_class=100)
        clients = Clients(1, lambda s: s.post(stack.url("/evaluate"),
                                              files={"file": ("d.zip", dataset)}, timeout=60),
                          repeat=False)  # fmt: skip
        clients.stop()
        (job_id,) = clients.job_ids

        def progress() -> int:
            return requests.get(stack.url(f"/jobs/{job_id}"), timeout=5).json()["progress"]

        wait_until(lambda: (progress() or {}).get("done", 0) > 0, 60, "evaluation progress")
        os.kill(evaluator.pid, signal.SIGSTOP)  # at once, then look: mid-evaluation?
        fault_at = time.time()
        assert progress()["done"] < progress()["total"]
        evaluator.kill()
        evaluator.wait()
        stack.start_worker("evaluate-again", EVALUATE_QUEUE)
        records = settle(stack.redis, {job_id})
        notices.close()
        result = requests.get(stack.url(f"/jobs/{job_id}"), timeout=5).json()
    outcome = Outcome.of(
        "evaluate worker SIGKILL mid-evaluation (600 images, chunks of 4), another started",
        "the chunks it held run again on the new worker; each chunk counts once",
        clients, records, notices, fault_at,
        images_counted=result.get("result", {}).get("images"),
    )  # fmt: skip
    kept(reliability, outcome)
    assert result["status"] == "succeeded", result
    assert result["result"]["images"] == 600  # the truncated one is skipped
    assert result["progress"]["done"] == result["progress"]["total"]  # each chunk once
    outcome.assert_recovered()


def test_readiness_tells_the_truth_fast_while_200_clients_wait(tmp_path, reliability):
    # Room for all 200 photos although the frozen worker's capacity drops out.
    with fault_stack(tmp_path, {"MAX_QUEUED_PHOTOS": "1000"}) as stack:
        predict = stack.start_worker("predict")
        stack.start_worker("evaluate", EVALUATE_QUEUE)
        stack.start_api(threads=64)
        stack.wait_for_workers(2)
        wait_until(lambda: probe(stack, "/readyz")[0] == 200, 30, "ready")
        notices = Notices(stack.redis)
        os.kill(predict.pid, signal.SIGSTOP)
        frozen_s = seconds_until(lambda: probe(stack, "/readyz")[0] == 503, 15, "not ready")
        fault_at = time.time()
        clients = Clients(200, post_photo(stack.base_url, photo(), 20), repeat=False)
        wait_until(lambda: len(list(stack.redis.scan_iter("ecosnap:job:*"))) == 200, 60, "jobs")
        waiting = 200 - len(clients.attempts)
        probes = [probe(stack, path) for _ in range(10) for path in ("/readyz", "/livez")]
        os.kill(predict.pid, signal.SIGCONT)
        clients.stop()
        records = settle(stack.redis, clients.job_ids)
        wait_until(lambda: probe(stack, "/readyz")[0] == 200, 15, "ready again")
        predict.kill()
        killed_s = seconds_until(lambda: probe(stack, "/readyz")[0] == 503, 15, "not ready")
        notices.close()
    slowest_ms = max(seconds for _, seconds in probes) * 1000
    outcome = Outcome.of(
        "health: predict worker frozen, 200 clients send `?wait=20`, worker woken, then killed",
        "/readyz is 503 within 10 s of a worker freezing or dying, and answers in "
        "milliseconds however many requests wait (each API process lets `?wait` hold all "
        "its threads but 4; a wait beyond that is answered 202 at once)",
        clients, records, notices, fault_at,
        not_ready_after_freeze_s=frozen_s, not_ready_after_kill_s=killed_s,
        requests_held_waiting=waiting, slowest_health_probe_ms=round(slowest_ms, 1),
    )  # fmt: skip
    kept(reliability, outcome)
    assert {status for status, _ in probes} == {503, 200}  # /readyz down, /livez up
    assert frozen_s <= 10 and killed_s <= 10
    assert slowest_ms < 100, probes
    assert waiting >= 50, "many requests held their thread while health was probed"
    assert outcome.accepted == 200


def refused(url: str) -> bool:
    """Whether a new connection to ``url`` is refused (not left hanging)."""
    try:
        requests.get(url, timeout=2)
    except requests.ConnectionError:
        return True
    except requests.Timeout:  # connected, then left unanswered
        return False
    return False


def probe(stack, path: str) -> tuple[int, float]:
    started = time.monotonic()
    response = requests.get(stack.url(path), timeout=5)
    return response.status_code, time.monotonic() - started
