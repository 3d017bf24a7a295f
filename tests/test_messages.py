"""Task messages: one definition each, and a clear refusal of any other shape."""

import pytest

from common.messages import (
    MESSAGES,
    Evaluate,
    EvaluateChunk,
    MalformedMessage,
    Photo,
    Predict,
    ValidateModel,
)
from worker.celery import app as celery_app
from worker.celery import celery_config


class RecordingSender:
    def __init__(self) -> None:
        self.sent = []

    def send_task(self, name, *, kwargs, task_id):
        self.sent.append((name, kwargs, task_id))


def test_a_message_travels_as_its_fields_and_comes_back_equal():
    sender = RecordingSender()
    photo = Photo("j" * 32, "uploads/a.jpg", "http://h/a.jpg", lang="en", reply_to="ecosnap:r",
                  request_id="r")  # fmt: skip
    Predict.of([photo, photo]).send(sender)
    [(name, kwargs, task_id)] = sender.sent
    assert (name, task_id) == ("ecosnap.predict", None)
    received = Predict.received((), kwargs)
    assert [Photo.received((), item) for item in received.photos] == [photo, photo]


def test_chunks_name_their_job_and_index_and_carry_items_as_lists():
    chunk = EvaluateChunk("j", "uploads/d.zip", 3, [["Kaca/a.jpg", 0]])
    sender = RecordingSender()
    chunk.send(sender)
    fields = {"job_id": "j", "dataset_key": "uploads/d.zip", "index": 3,
              "items": [["Kaca/a.jpg", 0]]}  # fmt: skip
    assert sender.sent == [("ecosnap.evaluate_chunk", fields, None)]
    assert EvaluateChunk.received((), fields) == chunk


PHOTO = {"job_id": "j", "image_key": "k", "image_url": "u", "lang": "id", "reply_to": ""}


@pytest.mark.parametrize(
    ("record", "args", "kwargs", "said"),
    [
        (Photo, (), PHOTO | {"lang": None}, "lang is NoneType"),
        (Photo, (), {k: v for k, v in PHOTO.items() if k != "lang"}, "missing lang"),
        (Photo, (), PHOTO | {"size": 3}, "unexpected size"),
        (Predict, ([PHOTO],), {}, "1 positional arguments"),
        (Predict, (), {"photos": PHOTO}, "photos is dict"),
    ],
    ids=["wrong-type", "missing", "unexpected", "positional", "not-a-list"],
)
def test_any_other_shape_is_refused_with_what_is_wrong(record, args, kwargs, said):
    with pytest.raises(MalformedMessage) as refused:
        record.received(args, kwargs)
    assert refused.value.code == "malformed_message"
    assert "ecosnap.predict" in refused.value.message and said in refused.value.message


def test_only_optional_fields_accept_none():
    assert Evaluate.received((), {"dataset_key": "k", "split": None}).split is None
    assert ValidateModel.received((), {"version": "v2"}).version == "v2"
    with pytest.raises(MalformedMessage):
        ValidateModel.received((), {"version": None})


def test_every_message_has_its_own_task_and_is_routed_to_its_queue(settings):
    routes = celery_config(settings)["task_routes"]
    assert len({message.task for message in MESSAGES}) == len(MESSAGES)
    for message in MESSAGES:
        assert routes[message.task] == {"queue": message.queue}


def test_the_worker_registers_a_task_for_every_message():
    celery_app.loader.import_default_modules()
    assert {message.task for message in MESSAGES} <= set(celery_app.tasks)
