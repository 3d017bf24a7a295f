"""The task messages between the API and the workers, each defined once.

A message class names its Celery task, the queue it travels on and its fields. The
sender builds one and calls ``send``; the worker's task rebuilds it with
``received``, which refuses a message whose fields differ (sent by an API of another
release, say) with a clear ``malformed_message`` error instead of a ``TypeError``
deep inside a task.

Messages carry keys and names, never pixels or files: the photo and the dataset zip
are in storage (``common.storage``), the model in the registry. A ``Predict`` message
carries a group of photos, each naming its job: an API process sends every photo
that arrived while it was sending the previous group as one message, so the queue's
cost per message is shared. The job of an evaluation or a validation is its Celery
task id; evaluation chunks (many per job) name their job.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from functools import cache
from types import UnionType
from typing import Any, ClassVar, Protocol, Self, Union, get_args, get_origin, get_type_hints

from common.errors import Refusal

PREDICT_QUEUE = "predict"
EVALUATE_QUEUE = "evaluate"
# In this order a worker that consumes both queues asks them (kombu's "priority"
# strategy): photos first.
QUEUES = (PREDICT_QUEUE, EVALUATE_QUEUE)


class MalformedMessage(Refusal):
    """A task message whose fields are not the ones its class defines."""

    CODE = "malformed_message"

    def __init__(self, message: str) -> None:
        super().__init__(self.CODE, message)


class TaskSender(Protocol):
    """What sending needs of a Celery app."""

    def send_task(self, name: str, *, kwargs: dict[str, Any], task_id: str | None) -> Any: ...


@dataclass(frozen=True)
class Fields:
    """A dataclass that rebuilds itself from received fields, refusing any other shape."""

    @classmethod
    def described(cls) -> str:
        return f"The {cls.__name__} record"

    @classmethod
    @cache
    def expected_fields(cls) -> dict[str, Any]:
        """Each field's type, resolved once: every photo of every message is checked."""
        hints = get_type_hints(cls)
        return {field.name: hints[field.name] for field in fields(cls)}

    @classmethod
    def received(cls, args: Sequence[Any], kwargs: dict[str, Any]) -> Self:
        """What a worker was handed; anything but exactly our fields is refused."""
        expected = cls.expected_fields()
        problems = []
        if args:
            problems.append(f"{len(args)} positional arguments")
        if missing := sorted(expected.keys() - kwargs.keys()):
            problems.append(f"missing {', '.join(missing)}")
        if unexpected := sorted(kwargs.keys() - expected.keys()):
            problems.append(f"unexpected {', '.join(unexpected)}")
        problems += [
            f"{name} is {type(kwargs[name]).__name__}"
            for name, hint in expected.items()
            if name in kwargs and not _matches(kwargs[name], hint)
        ]
        if problems:
            raise MalformedMessage(f"{cls.described()} has {'; '.join(problems)}.")
        return cls(**kwargs)


@dataclass(frozen=True)
class Message(Fields):
    """A task message: ``task`` and ``queue`` name where it goes, the fields what it says."""

    task: ClassVar[str]
    queue: ClassVar[str]

    @classmethod
    def described(cls) -> str:
        return f"The {cls.task} message"

    def send(self, celery: TaskSender, task_id: str | None = None) -> None:
        celery.send_task(self.task, kwargs=self._fields(), task_id=task_id)

    def recorded(self, task_id: str | None = None) -> str:
        """This message as its job's record keeps it, to send it again if the broker
        loses it (``send_recorded``)."""
        return json.dumps({"task": self.task, "kwargs": self._fields(), "task_id": task_id})

    def _fields(self) -> dict[str, Any]:
        # The fields are JSON values already (``of`` builds photo groups as dicts):
        # no deep copy of every photo again, as ``asdict`` would make.
        return {field.name: getattr(self, field.name) for field in fields(self)}


def send_recorded(celery: TaskSender, recorded: str) -> None:
    """Send again a message kept by ``Message.recorded``."""
    message = json.loads(recorded)
    celery.send_task(message["task"], kwargs=message["kwargs"], task_id=message["task_id"])


def recorded_queue(recorded: str) -> str:
    """The queue of a message kept by ``Message.recorded``."""
    task = json.loads(recorded)["task"]
    return next(message.queue for message in MESSAGES if message.task == task)


def _matches(value: Any, hint: Any) -> bool:
    """``isinstance`` for the plain hints messages use (``str``, ``str | None``, ``list``)."""
    options = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
    return any(isinstance(value, get_origin(option) or option) for option in options)


@dataclass(frozen=True)
class Photo(Fields):
    """One photo of a ``Predict`` message: its job, where it is stored, how to answer,
    the reply channel of the API process waiting for it ("" if none waits), and the
    request it came with (for the worker's log lines)."""

    job_id: str
    image_key: str
    image_url: str
    lang: str
    reply_to: str
    request_id: str

    @classmethod
    def described(cls) -> str:
        return f"A photo of the {Predict.task} message"


@dataclass(frozen=True)
class Predict(Message):
    """Classify a group of stored photos: ``photos`` are ``Photo`` fields."""

    task: ClassVar[str] = "ecosnap.predict"
    queue: ClassVar[str] = PREDICT_QUEUE

    photos: list

    @classmethod
    def of(cls, photos: Sequence[Photo]) -> Predict:
        return cls(photos=[asdict(photo) for photo in photos])


@dataclass(frozen=True)
class Evaluate(Message):
    """Plan the evaluation of a stored dataset zip and send its chunks; the task id is
    the job id."""

    task: ClassVar[str] = "ecosnap.evaluate"
    queue: ClassVar[str] = EVALUATE_QUEUE

    dataset_key: str
    split: str | None


@dataclass(frozen=True)
class EvaluateChunk(Message):
    """Classify chunk ``index`` of an evaluation: ``items`` are ``[member name, class
    index]``. The index makes a chunk delivered twice count once."""

    task: ClassVar[str] = "ecosnap.evaluate_chunk"
    queue: ClassVar[str] = EVALUATE_QUEUE

    job_id: str
    dataset_key: str
    index: int
    items: list


@dataclass(frozen=True)
class ValidateModel(Message):
    """Load an uploaded model version and check it; the task id is the job id.

    Rare and slow (a model load): background work on the evaluate queue, behind photos.
    """

    task: ClassVar[str] = "ecosnap.validate_model"
    queue: ClassVar[str] = EVALUATE_QUEUE

    version: str


MESSAGES: tuple[type[Message], ...] = (Predict, Evaluate, EvaluateChunk, ValidateModel)
