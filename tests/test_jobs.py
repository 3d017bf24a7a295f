"""Job records and waiting, on a real Redis."""

import json
import threading
import time
from contextlib import ExitStack

import pytest
from redis import Redis

from common.heartbeat import beat, retire
from common.job_waiter import JobWaiter
from common.jobs import KINDS, JobStore, pending_key
from common.messages import Evaluate, Predict
from common.processes import wait_until
from worker.redelivery import redeliver_stale

NO_PHOTOS = Predict(photos=[])  # the message of a predict job these tests never send


@pytest.fixture
def jobs(redis_url):
    redis = Redis.from_url(redis_url.rsplit("/", 1)[0] + "/2")
    return JobStore(redis, ttl_s=60)


def test_a_job_moves_from_queued_to_succeeded(jobs):
    job_id = jobs.create("predict", NO_PHOTOS, image_url="u")
    assert jobs.get(job_id)["status"] == "queued"
    jobs.mark_running([job_id])
    assert jobs.get(job_id)["status"] == "running"
    jobs.finish({job_id: {"label": "Kaca"}}, {})
    record = jobs.get(job_id)
    assert record["status"] == "succeeded" and record["result"] == {"label": "Kaca"}
    assert record["created_at"] <= record["started_at"] <= record["finished_at"]
    assert 0 < jobs.redis.ttl(f"ecosnap:job:{job_id}") <= 60


def test_finish_records_failures(jobs):
    ok, bad = jobs.create("predict", NO_PHOTOS), jobs.create("predict", NO_PHOTOS)
    jobs.finish({ok: {"label": "Logam"}}, {bad: {"code": "corrupt_image", "message": "m"}})
    assert jobs.get(bad)["error"]["code"] == "corrupt_image"
    assert jobs.get(ok)["result"] == {"label": "Logam"}


def test_every_waiter_on_a_job_wakes_with_its_outcome(jobs):
    waiter = JobWaiter(jobs)
    job_id = jobs.create("predict", NO_PHOTOS)
    answers = []
    with ExitStack() as expecting:
        waits = [expecting.enter_context(waiter.expect(job_id)) for _ in range(3)]
        threads = [threading.Thread(target=lambda w=w: answers.append(w(20))) for w in waits]
        for thread in threads:
            thread.start()
        jobs.finish({job_id: {"label": "Kertas"}}, {})
        for thread in threads:
            thread.join(30)
    assert answers == [{"status": "succeeded", "result": {"label": "Kertas"}}] * 3


def test_an_expectation_times_out_and_a_status_only_notice_reads_the_record(jobs):
    waiter = JobWaiter(jobs)
    pending = jobs.create("predict", NO_PHOTOS)
    with waiter.expect(pending) as wait:
        assert wait(0.2) is None
    evaluation = jobs.create("evaluate", Evaluate(dataset_key="d", split=None))
    with waiter.expect(evaluation) as wait:
        assert jobs.cancel(evaluation)
        record = wait(20)
    assert record["status"] == "cancelled" and record["kind"] == "evaluate"


def test_a_batch_is_announced_once_on_the_reply_channel_of_the_waiting_process(jobs):
    waiter = JobWaiter(jobs)
    listener = jobs.redis.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(waiter.reply_channel)
    listener.get_message(timeout=5)
    ok, bad = jobs.create("predict", NO_PHOTOS), jobs.create("predict", NO_PHOTOS)
    with waiter.expect(ok) as wait_ok, waiter.expect(bad) as wait_bad:
        replies = dict.fromkeys((ok, bad), waiter.reply_channel)
        jobs.finish({ok: {"label": "Kaca"}}, {bad: {"code": "corrupt_image", "message": "m"}},
                    replies)  # fmt: skip
        assert wait_ok(20) == {"status": "succeeded", "result": {"label": "Kaca"}}
        assert wait_bad(20)["error"]["code"] == "corrupt_image"
    notices = []
    while (notice := listener.get_message(timeout=0.5)) is not None:
        notices.append(json.loads(notice["data"]))
    assert notices == [{ok: {"status": "succeeded", "result": {"label": "Kaca"}},
                        bad: {"status": "failed", "error": {"code": "corrupt_image",
                                                            "message": "m"}}}]  # fmt: skip
    assert jobs.get(bad)["status"] == "failed"  # the records are written as before


def test_only_queued_or_running_jobs_run_and_a_finished_one_keeps_its_outcome(jobs):
    queued, running, done = (jobs.create("predict", NO_PHOTOS) for _ in range(3))
    jobs.mark_running([running])
    jobs.finish({done: {"label": "Kaca"}}, {})
    gone = "f" * 32  # expired: no record
    # A message delivered again after a worker died runs again; a finished job never.
    assert jobs.mark_running([queued, done, running, gone]) == ([queued, running], [])
    assert jobs.get(done)["status"] == "succeeded" and not jobs.redis.exists(f"ecosnap:job:{gone}")
    listener = jobs.redis.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(f"ecosnap:job:{done}:done")
    listener.get_message(timeout=5)
    jobs.finish({}, {done: {"code": "worker_error", "message": "late"}})
    assert jobs.get(done)["result"] == {"label": "Kaca"} and "error" not in jobs.get(done)
    assert listener.get_message(timeout=0.5) is None  # announced once, not again


class RecordingSender:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict, str | None]] = []

    def send_task(self, name: str, *, kwargs: dict, task_id: str | None) -> None:
        self.sent.append((name, kwargs, task_id))


def test_a_job_whose_message_made_no_progress_is_sent_again_from_its_record(jobs):
    for kind in KINDS:
        jobs.redis.delete(pending_key(kind))
    evaluate = Evaluate(dataset_key="uploads/d.zip", split=None)
    lost, started, finished = (jobs.create("evaluate", evaluate) for _ in range(3))
    photo = jobs.create("predict", NO_PHOTOS)
    jobs.mark_running([photo])  # in a worker's hands: leased by the broker instead
    jobs.transition(started, ("queued",), status="running")
    jobs.transition(finished, ("queued",), status="succeeded", finished_at="t")
    sender = RecordingSender()
    assert redeliver_stale(jobs, sender, quiet_s=60) == 0  # nothing is that old yet
    for key in map(pending_key, KINDS):  # two minutes later...
        for job_id, seen in jobs.redis.zrange(key, 0, -1, withscores=True):
            jobs.redis.zadd(key, {job_id: seen - 120})
    jobs.progressed(started)  # ...the running evaluation has just recorded a chunk

    def claims_run_out() -> None:
        for job_id in (lost, started):
            jobs.redis.zadd(pending_key("evaluate"), {job_id: time.time() - 120}, xx=True)
        jobs.progressed(started)

    # No worker serves the evaluate queue: its messages are only waiting.
    beat(jobs.redis, "host:1", {"queues": ["predict"]}, interval_s=10)
    assert redeliver_stale(jobs, sender, quiet_s=60) == 0
    claims_run_out()
    beat(jobs.redis, "host:2", {"queues": ["evaluate"]}, interval_s=10)
    jobs.redis.delete("evaluate")
    jobs.redis.lpush("evaluate", "a message ahead")  # ...it may be waiting behind it
    assert redeliver_stale(jobs, sender, quiet_s=60) == 0
    claims_run_out()
    jobs.redis.delete("evaluate")
    assert redeliver_stale(jobs, sender, quiet_s=60) == 1
    assert sender.sent == [(Evaluate.task, {"dataset_key": "uploads/d.zip", "split": None}, lost)]
    assert "sent_again_at" in jobs.get(lost) and "sent_again_at" not in jobs.get(started)
    # Claimed: the next look (another worker's, say) does not send it again at once.
    assert redeliver_stale(jobs, sender, quiet_s=60) == 0
    assert jobs.redis.zscore(pending_key("evaluate"), finished) is None
    assert jobs.redis.zscore(pending_key("predict"), photo) is None
    assert jobs.pending("evaluate") == 2  # the lost one and the running one
    for name in ("host:1", "host:2"):
        retire(jobs.redis, name)


def test_a_job_twice_in_one_batch_starts_once(jobs):
    job_id = jobs.create("predict", NO_PHOTOS)
    assert jobs.mark_running([job_id, job_id]) == ([job_id], [])
    assert jobs.redis.hget(f"ecosnap:job:{job_id}", "starts") == b"1"


def test_chunks_are_sent_by_one_copy_of_a_start_at_a_time(jobs):
    job_id = jobs.create("evaluate", Evaluate(dataset_key="uploads/d.zip", split=None))
    assert jobs.claim_chunk_sending(job_id, for_s=0.2)
    assert not jobs.claim_chunk_sending(job_id, for_s=0.2)  # a copy right behind it
    wait_until(lambda: jobs.claim_chunk_sending(job_id, for_s=0.2), 5, "the claim to run out")
