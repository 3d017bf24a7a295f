"""The task messages between the API and the workers, each defined once.

A message class names its Celery task, the queue it travels on and its fields. The
sender builds one and calls ``send``; the worker's task rebuilds it with
``received``, which refuses a message whose fields differ (sent by an API of another
release, say) with a clear ``malformed_message`` error instead of a ``TypeError``
deep inside a task.

Messages carry keys and names, never pixels or files: the photo and the dataset zip
are in storage (``common.storage``), the model in the registry. The job a message
belongs to is its Celery task id, except for evaluation chunks: an evaluation has
many, so each chunk names its job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
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

    def __init__(self, message: str) -> None:
        super().__init__("malformed_message", message)


class TaskSender(Protocol):
    """What sending needs of a Celery app."""

    def send_task(self, name: str, *, kwargs: dict[str, Any], task_id: str | None) -> Any: ...


@dataclass(frozen=True)
class Message:
    """A task message: ``task`` and ``queue`` name where it goes, the fields what it says."""

    task: ClassVar[str]
    queue: ClassVar[str]

    def send(self, celery: TaskSender, task_id: str | None = None) -> None:
        celery.send_task(self.task, kwargs=asdict(self), task_id=task_id)

    @classmethod
    def received(cls, args: Sequence[Any], kwargs: dict[str, Any]) -> Self:
        """The message a worker was handed; anything but exactly our fields is refused."""
        hints = get_type_hints(cls)
        expected = {field.name: hints[field.name] for field in fields(cls)}
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
            raise MalformedMessage(f"The {cls.task} message has {'; '.join(problems)}.")
        return cls(**kwargs)


def _matches(value: Any, hint: Any) -> bool:
    """``isinstance`` for the plain hints messages use (``str``, ``str | None``, ``list``)."""
    options = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
    return any(isinstance(value, get_origin(option) or option) for option in options)


@dataclass(frozen=True)
class Predict(Message):
    """Classify one stored photo; the task id is the job id."""

    task: ClassVar[str] = "ecosnap.predict"
    queue: ClassVar[str] = PREDICT_QUEUE

    image_key: str
    image_url: str
    lang: str


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
    """Classify some images of an evaluation: ``items`` are ``[member name, class index]``."""

    task: ClassVar[str] = "ecosnap.evaluate_chunk"
    queue: ClassVar[str] = EVALUATE_QUEUE

    job_id: str
    dataset_key: str
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
