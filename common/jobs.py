"""Job records in Redis: what ``GET /jobs/<id>`` shows and what ``?wait`` waits for.

A job is a Redis hash ``ecosnap:job:<id>`` with an expiry. The API creates it
(``queued``) before it sends the message that names it (a ``Predict`` photo, or an
evaluation's or validation's task id); the worker moves it to ``running`` and then
``succeeded`` or ``failed``, never back, and announces the outcome so waiting
requests (``common.job_waiter``) wake at once instead of polling: on the reply
channel of the API process that waits, or on ``ecosnap:job:<id>:done``.
Celery's own result backend is not used: it cannot tell an unknown id from a queued
one and has no place for the job's kind and timestamps.

Each record also keeps the message that runs its job, and the job's id stays in a
sorted set of its kind's jobs whose message may still be only in the broker
(``pending_key``, scored by the job's last sign of progress) until a worker has it
in hand; the sets' sizes are the queues' backlogs (``api/admission.py``). The
broker can lose a message in one window (kombu pops it from its list, then records
it as unacknowledged: a Redis crash in between, after the pop was written, loses it),
so a job pending for too long has its message sent again from its record
(``worker/redelivery.py``); job states only move forward, so a repeat is harmless.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from redis import Redis

from common.errors import Refusal
from common.messages import Message
from common.redis_client import REDIS_DOWN

JOB_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
# The longest a request may wait for its job (``POST /predict?wait=``).
MAX_WAIT_S = 30.0
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
# The error of a job the worker itself failed (not its input); the API answers it 503.
WORKER_ERROR = {"code": "worker_error", "message": "The worker failed; the error is logged."}
_JSON_FIELDS = ("result", "error")
KINDS = ("predict", "evaluate", "validate_model")
# A photo started this many times without an outcome (its worker died every time)
# fails, instead of taking down the next worker too.
MAX_STARTS = 3
GAVE_UP = {
    "code": WORKER_ERROR["code"],
    "message": f"The photo was started {MAX_STARTS} times and its worker stopped each time.",
}


class QueueFull(Exception):
    """No room for another job of this kind now."""


def pending_key(kind: str) -> str:
    """The sorted set of ``kind``'s jobs whose message may still be only in the broker."""
    return f"ecosnap:jobs:pending:{kind}"


def _key(job_id: str) -> str:
    return f"ecosnap:job:{job_id}"


def reply_channel() -> str:
    """A new channel on which one API process hears of its own jobs' outcomes."""
    return f"ecosnap:replies:{uuid.uuid4().hex}"


def done_channel(job_id: str) -> str:
    """Where the finish of ``job_id`` is announced; ``*`` for a pattern of every job."""
    return f"ecosnap:job:{job_id}:done"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobStore:
    """Reads and writes job records; a record expires ``ttl_s`` after it is created
    and again after it finishes."""

    def __init__(self, redis: Redis, ttl_s: int, worker: str = "") -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        # The worker process whose store this is: recorded in each job it starts, so
        # an operator (or the fault-injection suite) can tell who holds a job.
        self.worker = worker
        # Check and set in one step, so two processes never both move a job on
        # (e.g. a cancel and the evaluation that finishes at the same moment).
        self._transition = self._script(
            """
            local status = redis.call('HGET', KEYS[1], 'status')
            if not status or not string.find(ARGV[1], ',' .. status .. ',', 1, true) then
                return 0
            end
            redis.call('HSET', KEYS[1], unpack(ARGV, 2))
            return 1
            """
        )

        self._add_chunk = self._script(
            """
            if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 1 then
                redis.call('EXPIRE', KEYS[2], ARGV[4])
                redis.call('ZADD', '{pending:evaluate}', 'XX', ARGV[5], ARGV[6])
                redis.call('HINCRBY', KEYS[1], 'done', ARGV[3])
                return redis.call('HINCRBY', KEYS[1], 'chunks_done', 1)
            end
            return tonumber(redis.call('HGET', KEYS[1], 'chunks_done'))
            """
        )
        # ARGV: now, this worker, the most starts, then the job ids of KEYS. Returns
        # the indices of the jobs that may run and of those started too often.
        self._start = self._script(
            """
            local moved, exhausted = {}, {}
            for index, key in ipairs(KEYS) do
                local status = redis.call('HGET', key, 'status')
                if status == 'queued' or status == 'running' then
                    redis.call('ZREM', '{pending:predict}', ARGV[3 + index])
                    redis.call('HDEL', key, 'message')
                    if redis.call('HINCRBY', key, 'starts', 1) > tonumber(ARGV[3]) then
                        table.insert(exhausted, index)
                    else
                        redis.call('HSET', key, 'status', 'running', 'started_at', ARGV[1],
                                   'worker', ARGV[2])
                        table.insert(moved, index)
                    end
                end
            end
            return {moved, exhausted}
            """
        )
        # ARGV: now, ttl, then per job: id, status, field, JSON value, reply channel
        # ("" for none), its own channel.
        self._finish = self._script(
            """
            local notices, channels = {}, {}
            for index, key in ipairs(KEYS) do
                local at = 2 + (index - 1) * 6
                local job_id, status, field = ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
                local value, reply, own = ARGV[at + 4], ARGV[at + 5], ARGV[at + 6]
                local current = redis.call('HGET', key, 'status')
                if current == 'queued' or current == 'running' then
                    redis.call('HSET', key, 'status', status, field, value, 'finished_at', ARGV[1])
                    redis.call('EXPIRE', key, ARGV[2])
                    redis.call('ZREM', '{pending:predict}', job_id)
                    redis.call('HDEL', key, 'message')
                    local outcome = '{"status": "' .. status .. '", "' .. field .. '": '
                        .. value .. '}'
                    if reply == '' then
                        redis.call('PUBLISH', own, outcome)
                    else
                        if not notices[reply] then
                            notices[reply] = {}
                            table.insert(channels, reply)
                        end
                        table.insert(notices[reply], '"' .. job_id .. '": ' .. outcome)
                    end
                end
            end
            for _, channel in ipairs(channels) do
                redis.call('PUBLISH', channel, '{' .. table.concat(notices[channel], ', ') .. '}')
            end
            return #channels
            """
        )

        # The pending jobs last seen progressing before ARGV[1], at most ARGV[3] of
        # them, each marked as seen at ARGV[2]: one worker claims them for a while.
        self._claim_stale = self._script(
            """
            local stale = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE',
                                     'LIMIT', 0, ARGV[3])
            for _, job_id in ipairs(stale) do
                redis.call('ZADD', KEYS[1], ARGV[2], job_id)
            end
            return stale
            """
        )

        # Room for one more pending job: its place is taken at once, or 0.
        self._admit = self._script(
            """
            if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
                return 0
            end
            return redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
            """
        )

    def _script(self, source: str) -> Any:
        """A Lua script of this store; ``{pending:KIND}`` in it names ``pending_key(KIND)``."""
        for kind in KINDS:
            source = source.replace(f"{{pending:{kind}}}", pending_key(kind))
        return self.redis.register_script(source)

    def create(self, kind: str, message: Message, limit: int | None = None, **fields: str) -> str:
        """A queued job that ``message`` runs, sent with the job id as its task id;
        ``QueueFull`` if ``limit`` jobs of its kind are pending already."""
        job_id = new_job_id()
        if limit is not None and not self._admit(
            keys=[pending_key(kind)], args=[limit, time.time(), job_id]
        ):
            raise QueueFull(kind)
        self.create_all(kind, {job_id: fields | {"message": message.recorded(job_id)}})
        return job_id

    def pending(self, kind: str) -> int:
        """How many jobs of ``kind`` are pending: the backlog of its queue."""
        return self.redis.zcard(pending_key(kind))

    def create_all(self, kind: str, jobs: dict[str, dict[str, str]]) -> None:
        """Queued records for these job ids and their fields, in one round trip; the
        fields hold the job's ``message`` (``Message.recorded``)."""
        now, seen = utc_now(), time.time()
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id, fields in jobs.items():
                record = {"job_id": job_id, "kind": kind, "status": "queued", "created_at": now}
                pipe.hset(_key(job_id), mapping=record | fields)
                pipe.expire(_key(job_id), self.ttl_s)
            pipe.zadd(pending_key(kind), dict.fromkeys(jobs, seen))
            pipe.execute()

    def in_hand(self, kind: str, job_id: str) -> None:
        """A worker holds the job's message now (leased by the broker until it is
        acknowledged): no need to send it again from the record."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(pending_key(kind), job_id)
            pipe.hdel(_key(job_id), "message")
            pipe.execute()

    def claim_chunk_sending(self, job_id: str, for_s: float) -> bool:
        """Whether this worker may send the evaluation's chunks now: not if a worker
        did in the last ``for_s``, so copies of its start message that run one after
        another send them once."""
        claim = f"{_key(job_id)}:chunks_sent"
        return bool(self.redis.set(claim, 1, nx=True, px=max(1, int(for_s * 1000))))

    def progressed(self, job_id: str) -> None:
        """An evaluation moved on (it started, or recorded a chunk): its messages are
        not lost."""
        self.redis.zadd(pending_key("evaluate"), {job_id: time.time()}, xx=True)

    def claim_stale(self, quiet_s: float, limit: int = 500) -> list[tuple[str, dict[str, str]]]:
        """Pending jobs with no sign of progress for ``quiet_s``, with their records
        (empty when expired); claimed for another ``quiet_s``, so that of several
        workers looking only one sends each again."""
        now = time.time()
        stale = [
            job_id.decode()
            for kind in KINDS
            for job_id in self._claim_stale(
                keys=[pending_key(kind)], args=[now - quiet_s, now, limit]
            )
        ]
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in stale:
                pipe.hgetall(_key(job_id))
            records = pipe.execute() if stale else []
        return [
            (job_id, {k.decode(): v.decode() for k, v in record.items()})
            for job_id, record in zip(stale, records, strict=True)
        ]

    def forget_pending(self, job_ids: list[str]) -> None:
        if job_ids:
            with self.redis.pipeline(transaction=False) as pipe:
                for kind in KINDS:
                    pipe.zrem(pending_key(kind), *job_ids)
                pipe.execute()

    def get(self, job_id: str) -> dict[str, Any] | None:
        if not JOB_ID_PATTERN.match(job_id):
            return None
        raw = self.redis.hgetall(_key(job_id))
        if not raw:
            return None
        record: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
        for name in _JSON_FIELDS:
            if name in record:
                record[name] = json.loads(record[name])
        return record

    def add_chunk(self, job_id: str, index: int, outcome: dict[str, Any], images: int) -> int:
        """Record evaluation chunk ``index`` once; returns how many chunks are now done.

        A chunk classified twice (its message delivered again) is counted once: the
        first outcome stands.
        """
        return self._add_chunk(
            keys=[_key(job_id), _key(job_id) + ":chunks"],
            args=[index, json.dumps(outcome), images, self.ttl_s, time.time(), job_id],
        )

    def chunk_recorded(self, job_id: str, index: int) -> bool:
        return bool(self.redis.hexists(_key(job_id) + ":chunks", str(index)))

    def chunk_outcomes(self, job_id: str) -> list[dict[str, Any]]:
        """The recorded chunks' outcomes, in chunk order."""
        raw = self.redis.hgetall(_key(job_id) + ":chunks")
        return [json.loads(raw[index]) for index in sorted(raw, key=int)]

    def transition(self, job_id: str, allowed: tuple[str, ...], **fields: Any) -> bool:
        """Set ``fields`` only if the job's status is one of ``allowed``; wake waiters
        when the new status is final."""
        pairs = [str(item) for pair in fields.items() for item in pair]
        moved = bool(self._transition(keys=[_key(job_id)], args=[f",{','.join(allowed)},", *pairs]))
        if moved and fields.get("status") in FINISHED:
            with self.redis.pipeline() as pipe:
                pipe.expire(_key(job_id), self.ttl_s)
                pipe.hdel(_key(job_id), "message")
                for kind in KINDS:
                    pipe.zrem(pending_key(kind), job_id)
                pipe.publish(done_channel(job_id), json.dumps({"status": fields["status"]}))
                pipe.execute()
        return moved

    def fail(self, job_id: str, code: str, message: str) -> None:
        """Fail an unfinished job with a client-facing error."""
        error = json.dumps({"code": code, "message": message})
        self.transition(job_id, ("queued", "running"), status="failed", error=error,
                        finished_at=utc_now())  # fmt: skip

    @contextmanager
    def failed_on_error(self, job_id: str) -> Iterator[None]:
        """Any error fails the job, so it never stays unfinished, then propagates.

        A refusal (a malformed message, say) is the job's error as it is; anything
        else is the worker's own failure, whose details go to the log only. A Redis
        failure fails nothing: the job store itself is what failed (the task goes back
        to the queue, ``worker/tasks.py``).
        """
        try:
            yield
        except REDIS_DOWN:
            raise
        except Exception as exc:
            error = exc.as_error() if isinstance(exc, Refusal) else WORKER_ERROR
            self.fail(job_id, **error)
            raise

    def cancel(self, job_id: str) -> bool:
        """Mark an unfinished job cancelled; ``False`` if it had already finished."""
        return self.transition(
            job_id, ("queued", "running"), status="cancelled", finished_at=utc_now()
        )

    def put_blob(self, job_id: str, name: str, data: bytes) -> None:
        self.redis.set(f"{_key(job_id)}:{name}", data, ex=self.ttl_s)

    def get_blob(self, job_id: str, name: str) -> bytes | None:
        return self.redis.get(f"{_key(job_id)}:{name}") if JOB_ID_PATTERN.match(job_id) else None

    def mark_running(self, job_ids: list[str]) -> tuple[list[str], list[str]]:
        """Move these jobs to ``running``; returns those that may run, and those
        started ``MAX_STARTS`` times already (to fail with ``GAVE_UP``).

        A job runs when it is queued, or running already (its message came back after
        a worker died holding it). A finished job is never run again, and one whose
        record is gone (expired) is not run at all: a redelivered message for either
        is dropped. A job in the batch twice (its message and a copy sent again) starts
        once.
        """
        job_ids = list(dict.fromkeys(job_ids))
        if not job_ids:
            return [], []
        moved, exhausted = self._start(
            keys=[_key(job_id) for job_id in job_ids],
            args=[utc_now(), self.worker, MAX_STARTS, *job_ids],
        )
        return [job_ids[i - 1] for i in moved], [job_ids[i - 1] for i in exhausted]

    def finish(
        self,
        results: dict[str, dict[str, Any]],
        errors: dict[str, dict[str, str]],
        replies: dict[str, str] | None = None,
    ) -> None:
        """Record a batch's outcomes in one round trip and wake their waiters.

        Only a job still queued or running gets an outcome: one that has finished
        keeps its first outcome and is announced once. A job with a reply channel in
        ``replies`` (the channel of the API process that waits for it) is announced
        there, in one notice per channel for the whole batch; any other on its own
        ``done_channel``. The outcome travels with the notice, so a waiting request
        needs no read. Outcomes are encoded once and spliced into the notices: this
        runs for every photo.
        """
        replies = replies or {}
        outcomes = [(i, "succeeded", "result", r) for i, r in results.items()] + [
            (i, "failed", "error", e) for i, e in errors.items()
        ]
        if not outcomes:
            return
        args: list[Any] = [utc_now(), self.ttl_s]
        for job_id, status, field_name, value in outcomes:
            channel = replies.get(job_id, "")
            args += [job_id, status, field_name, json.dumps(value), channel, done_channel(job_id)]
        self._finish(keys=[_key(job_id) for job_id, *_ in outcomes], args=args)
