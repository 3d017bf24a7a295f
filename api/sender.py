"""Sending photos to the workers: one message for every photo that is ready at once.

Each API process has one sender thread. A request hands its photo over and waits
until it is sent; the thread takes every photo waiting at that moment, writes their
job records in one round trip and sends them as one ``Predict`` message. Under load
the photos that arrive while one group is being sent form the next, so the
queue's cost per message (Celery's send, the worker's receive and acknowledgement)
is shared by the group; a lone photo is sent at once, alone.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field

from celery import Celery

from common.jobs import JobStore
from common.messages import Photo, Predict


@dataclass
class _Handover:
    photo: Photo
    owner: str
    sent: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


def record(handover: _Handover) -> dict[str, str]:
    """The job record's fields of a photo: where it is shown, whose it is, and its own
    message, sent again alone if the broker loses the group's."""
    photo = handover.photo
    fields = {"image_url": photo.image_url, "message": Predict.of([photo]).recorded(),
              "request_id": photo.request_id}  # fmt: skip
    return fields | {"owner": handover.owner} if handover.owner else fields


class PhotoSender:
    """The process's sender thread; create it after the process forks."""

    def __init__(self, jobs: JobStore, celery: Celery, max_group: int) -> None:
        self._jobs = jobs
        self._celery = celery
        self._max_group = max_group
        self._waiting: queue.SimpleQueue[_Handover] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="ecosnap-sender", daemon=True).start()

    def send(self, photo: Photo, owner: str = "") -> None:
        """Record the photo's job as queued (``owner``: the key that made it) and send
        it; returns once both are done."""
        handover = _Handover(photo, owner)
        self._waiting.put(handover)
        handover.sent.wait()
        if handover.error is not None:
            raise handover.error

    @property
    def backlog(self) -> int:
        """Photos handed over and not yet being sent."""
        return self._waiting.qsize()

    def _run(self) -> None:
        while True:
            group = [self._waiting.get()]
            while len(group) < self._max_group and not self._waiting.empty():
                group.append(self._waiting.get())
            try:
                self._jobs.create_all("predict", {h.photo.job_id: record(h) for h in group})
                Predict.of([handover.photo for handover in group]).send(self._celery)
            except Exception as exc:  # each waiting request raises it
                for handover in group:
                    handover.error = exc
            for handover in group:
                handover.sent.set()
