"""Job records and waiting, on a real Redis."""

import json
import threading
from contextlib import ExitStack

import pytest
from redis import Redis

from common.job_waiter import JobWaiter
from common.jobs import JobStore


@pytest.fixture
def jobs(redis_url):
    redis = Redis.from_url(redis_url.rsplit("/", 1)[0] + "/2")
    return JobStore(redis, ttl_s=60)


def test_a_job_moves_from_queued_to_succeeded(jobs):
    job_id = jobs.create("predict", image_url="u")
    assert jobs.get(job_id)["status"] == "queued"
    jobs.mark_running([job_id])
    assert jobs.get(job_id)["status"] == "running"
    jobs.finish({job_id: {"label": "Kaca"}}, {})
    record = jobs.get(job_id)
    assert record["status"] == "succeeded" and record["result"] == {"label": "Kaca"}
    assert record["created_at"] <= record["started_at"] <= record["finished_at"]
    assert 0 < jobs.redis.ttl(f"ecosnap:job:{job_id}") <= 60


def test_finish_records_failures(jobs):
    ok, bad = jobs.create("predict"), jobs.create("predict")
    jobs.finish({ok: {"label": "Logam"}}, {bad: {"code": "corrupt_image", "message": "m"}})
    assert jobs.get(bad)["error"]["code"] == "corrupt_image"
    assert jobs.get(ok)["result"] == {"label": "Logam"}


def test_every_waiter_on_a_job_wakes_with_its_outcome(jobs):
    waiter = JobWaiter(jobs)
    job_id = jobs.create("predict")
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
    pending = jobs.create("predict")
    with waiter.expect(pending) as wait:
        assert wait(0.2) is None
    evaluation = jobs.create("evaluate")
    with waiter.expect(evaluation) as wait:
        assert jobs.cancel(evaluation)
        record = wait(20)
    assert record["status"] == "cancelled" and record["kind"] == "evaluate"


def test_a_batch_is_announced_once_on_the_reply_channel_of_the_waiting_process(jobs):
    waiter = JobWaiter(jobs)
    listener = jobs.redis.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(waiter.reply_channel)
    listener.get_message(timeout=5)
    ok, bad = jobs.create("predict"), jobs.create("predict")
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
    queued, running, done = (jobs.create("predict") for _ in range(3))
    jobs.mark_running([running])
    jobs.finish({done: {"label": "Kaca"}}, {})
    gone = "f" * 32  # expired: no record
    # A message delivered again after a worker died runs again; a finished job never.
    assert jobs.mark_running([queued, done, running, gone]) == [queued, running]
    assert jobs.get(done)["status"] == "succeeded" and not jobs.redis.exists(f"ecosnap:job:{gone}")
    listener = jobs.redis.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(f"ecosnap:job:{done}:done")
    listener.get_message(timeout=5)
    jobs.finish({}, {done: {"code": "worker_error", "message": "late"}})
    assert jobs.get(done)["result"] == {"label": "Kaca"} and "error" not in jobs.get(done)
    assert listener.get_message(timeout=0.5) is None  # announced once, not again
