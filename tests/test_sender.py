"""The API's photo sender: photos ready at once travel as one message."""

import threading

import pytest
from redis import Redis

from api.sender import PhotoSender
from common.jobs import JobStore, new_job_id
from common.messages import Photo, Predict
from common.processes import wait_until


class GatedCelery:
    """Records each message; the first waits until the gate opens."""

    def __init__(self, fails: bool = False) -> None:
        self.sent: list[list[str]] = []
        self.gate = threading.Event()
        self.first_arrived = threading.Event()
        self.fails = fails

    def send_task(self, name, *, kwargs, task_id):
        assert name == Predict.task and task_id is None
        if self.fails:
            raise ConnectionError("broker unreachable")
        if not self.sent:
            self.first_arrived.set()
            self.gate.wait(10)
        self.sent.append([photo["job_id"] for photo in kwargs["photos"]])


@pytest.fixture
def jobs(redis_url):
    return JobStore(Redis.from_url(redis_url.rsplit("/", 1)[0] + "/4"), ttl_s=60)


def a_photo() -> Photo:
    return Photo(
        job_id=new_job_id(),
        image_key="uploads/x.jpg",
        image_url="u",
        lang="id",
        reply_to="",
        request_id="r",
    )


def test_photos_that_arrive_while_a_group_is_sent_travel_together(jobs):
    celery = GatedCelery()
    sender = PhotoSender(jobs, celery, max_group=4)
    first, later = a_photo(), [a_photo() for _ in range(6)]
    threads = [threading.Thread(target=sender.send, args=(first,))]
    threads[0].start()
    assert celery.first_arrived.wait(10)
    threads += [threading.Thread(target=sender.send, args=(p,)) for p in later]
    for thread in threads[1:]:
        thread.start()
    wait_until(lambda: sender.backlog == len(later), 10, "photos waiting")
    celery.gate.set()
    for thread in threads:
        thread.join(10)
    assert [len(group) for group in celery.sent] == [1, 4, 2]  # at most max_group a message
    assert sorted(job for group in celery.sent for job in group) == sorted(
        p.job_id for p in [first, *later]
    )
    record = jobs.get(first.job_id)
    assert record["status"] == "queued" and record["image_url"] == "u"


def test_a_failed_send_reaches_the_waiting_request(jobs):
    sender = PhotoSender(jobs, GatedCelery(fails=True), max_group=4)
    with pytest.raises(ConnectionError, match="broker unreachable"):
        sender.send(a_photo())
