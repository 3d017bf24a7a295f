"""The fault-injection harness of ``tests/test_faults.py``: a stack of real processes
that a test can break, clients that count every answer, and the ledger of jobs.

Every scenario ends with the same accounting (``Outcome``): the jobs whose id a
client learnt (from a 200 or a 202) are the accepted ones; each must reach a final
state (none lost), be announced once (none answered twice: every outcome notice
on Redis is counted), and every client request must get an HTTP answer (a result,
a job id, or a JSON refusal with ``Retry-After``), never a reset connection. The
rows become ``docs/RELIABILITY.md`` (``make reliability``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from redis import Redis, RedisError

from common.jobs import FINISHED
from common.messages import PREDICT_QUEUE
from common.processes import (
    free_port,
    http_ok,
    start_api,
    start_redis,
    start_worker,
    stop,
    wait_until,
)
from tests.conftest import UNLIMITED, photo

# How long the accepted jobs of a scenario may take to finish once the load stops.
SETTLE_S = 60
# The longest a killed, frozen or cut-off worker's jobs may take to finish (the
# issue's bound): its messages come back when their lease runs out, and a message
# the broker lost (popped for a worker that died or was cut off before the message
# was recorded as held) is sent again from its job's record after REDELIVER_AFTER_S
# without progress, looked for every third of it.
RECOVERY_S = 30


def timestamp(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


class FaultStack:
    """A private Redis (its own port and append-only file), Celery workers and the API,
    each a real process a test may kill, stop, freeze or start again."""

    def __init__(self, var_dir: Path, env: dict[str, str] | None = None) -> None:
        self.var_dir = var_dir
        self.redis_dir = var_dir / "redis"
        self.redis_process, self.redis_url = start_redis(self.redis_dir)
        self.redis_port = int(self.redis_url.rsplit(":", 1)[1].split("/")[0])
        self.env = {"REDIS_URL": self.redis_url, "ECOSNAP_VAR_DIR": str(var_dir), **UNLIMITED,
                    **(env or {})}  # fmt: skip
        self.redis = Redis.from_url(self.redis_url, socket_timeout=2, socket_connect_timeout=2)
        self.workers: dict[str, subprocess.Popen] = {}
        self.api: subprocess.Popen | None = None
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def start_worker(self, name: str, queue: str = PREDICT_QUEUE) -> subprocess.Popen:
        self.workers[name] = start_worker(
            self.env, f"{name}-{self.port}", self.var_dir / f"{name}.log", (queue,)
        )
        return self.workers[name]

    def start_api(self, threads: int = 32) -> None:
        self.api = start_api(self.env, self.port, workers=1, threads=threads,
                             log_path=self.var_dir / "api.log")  # fmt: skip
        wait_until(lambda: http_ok(self.url("/livez")), 60, "the API", self.api)

    def live_workers(self) -> list[dict[str, Any]]:
        try:
            return requests.get(self.url("/health"), timeout=2).json().get("workers", [])
        except (requests.RequestException, ValueError):
            return []

    def wait_for_workers(self, count: int) -> None:
        wait_until(lambda: len(self.live_workers()) == count, 180, f"{count} live workers")

    def worker_pids(self) -> set[int]:
        return {worker["pid"] for worker in self.live_workers()}

    def kill_redis(self) -> None:
        self.redis_process.kill()
        self.redis_process.wait()

    def restart_redis(self) -> None:
        """Start Redis again on the same port and append-only file, as ``ecosnap up`` does."""
        self.redis_process, _ = start_redis(self.redis_dir, self.redis_port)

    def log_text(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.var_dir.glob("*.log"))
        )

    def close(self) -> None:
        for process in [*([self.api] if self.api else []), *self.workers.values()]:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)  # a frozen process cannot stop
            stop(process, 20)
        stop(self.redis_process)
        shutil.rmtree(self.var_dir / "uploads", ignore_errors=True)


@contextmanager
def fault_stack(var_dir: Path, env: dict[str, str] | None = None) -> Iterator[FaultStack]:
    stack = FaultStack(var_dir, env)
    try:
        yield stack
    except BaseException as exc:
        exc.add_note(stack.log_text())
        raise
    finally:
        stack.close()


class Notices:
    """Counts, per job, the outcome notices workers publish on Redis: a job answered
    twice would be announced twice. It resubscribes by itself after Redis restarts."""

    def __init__(self, redis: Redis) -> None:
        self.counts: Counter[str] = Counter()
        self._pubsub = redis.pubsub(ignore_subscribe_messages=True)
        self._pubsub.psubscribe(**{"ecosnap:replies:*": self._replies,
                                   "ecosnap:job:*:done": self._done})  # fmt: skip
        for _ in range(2):
            self._pubsub.get_message(timeout=5)
        self._thread = self._pubsub.run_in_thread(
            sleep_time=0.5, daemon=True, exception_handler=lambda *_: time.sleep(0.2)
        )

    def _replies(self, message: dict[str, Any]) -> None:
        self.counts.update(json.loads(message["data"]).keys())

    def _done(self, message: dict[str, Any]) -> None:
        self.counts[message["channel"].decode().split(":")[2]] += 1

    def close(self) -> None:
        self._thread.stop()


@dataclass
class Attempt:
    """One client request: its HTTP status (None: no HTTP answer) and what it said."""

    status: int | None
    job_id: str | None
    error_code: str | None
    retry_after: bool
    started: float
    seconds: float
    failure: str | None = None


class Clients:
    """``count`` threads that each send ``request`` back to back until stopped (or once)."""

    def __init__(self, count: int, request: Callable[[requests.Session], requests.Response],
                 repeat: bool = True) -> None:  # fmt: skip
        self.attempts: list[Attempt] = []
        self._request = request
        self._repeat = repeat
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        session = requests.Session()
        while True:
            started = time.time()
            try:
                response = self._request(session)
            except requests.RequestException as exc:
                self.attempts.append(Attempt(None, None, None, False, started,
                                             time.time() - started, repr(exc)))  # fmt: skip
            else:
                try:
                    body = response.json()
                except ValueError:
                    body = {}
                self.attempts.append(Attempt(
                    response.status_code, body.get("job_id"),
                    (body.get("error") or {}).get("code"), "Retry-After" in response.headers,
                    started, time.time() - started,
                ))  # fmt: skip
            if not self._repeat or self._stop.is_set():
                return

    def stop(self, timeout_s: float = 90) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout_s)
        assert not any(t.is_alive() for t in self._threads), "a client is still waiting"

    def wait_for_answers(self, count: int, since: float = 0.0, timeout_s: float = 60) -> None:
        """Until ``count`` requests sent after ``since`` got a result (a steady load)."""
        wait_until(
            lambda: (
                sum(1 for a in self.attempts if a.status == 200 and a.started >= since) >= count
            ),
            timeout_s,
            f"{count} results",
        )

    @property
    def job_ids(self) -> set[str]:
        return {a.job_id for a in self.attempts if a.job_id and a.status in (200, 202)}


def jobs_running_on(redis: Redis, pid: int) -> int:
    """How many jobs the worker process ``pid`` is running now (the job records say)."""
    keys = [key for key in redis.scan_iter("ecosnap:job:*", count=1000) if key.count(b":") == 2]
    with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hmget(key, "status", "worker")
        values = pipe.execute()
    suffix = f":{pid}".encode()
    return sum(1 for status, worker in values if status == b"running" and worker.endswith(suffix))


def freeze_mid_batch(redis: Redis, pid: int, timeout_s: float = 30) -> int:
    """SIGSTOP the worker ``pid`` at a moment it is running jobs; how many it runs.

    Frozen first, then asked: a batch lasts milliseconds, so a look before a signal
    would be stale by the time the signal lands.
    """
    running = 0

    def frozen_running_jobs() -> bool:
        nonlocal running
        os.kill(pid, signal.SIGSTOP)
        if running := jobs_running_on(redis, pid):
            return True
        os.kill(pid, signal.SIGCONT)
        return False

    wait_until(frozen_running_jobs, timeout_s, f"worker {pid} caught running a batch")
    return running


def post_photo(base_url: str, data: bytes, wait_s: float) -> Callable[[requests.Session], Any]:
    def send(session: requests.Session) -> requests.Response:
        return session.post(f"{base_url}/predict?wait={wait_s:g}",
                            files={"file": ("p.jpg", data)}, timeout=wait_s + 60)  # fmt: skip

    return send


def settle(redis: Redis, job_ids: set[str], timeout_s: float = SETTLE_S) -> dict[str, dict]:
    """Each job's record once every one has finished, or when ``timeout_s`` runs out."""
    records: dict[str, dict] = {}

    def all_finished() -> bool:
        try:
            with redis.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.hgetall(f"ecosnap:job:{job_id}")
                raw = pipe.execute()
        except RedisError:  # Redis is starting again
            return False
        records.update({job_id: {k.decode(): v.decode() for k, v in record.items()}
                        for job_id, record in zip(job_ids, raw, strict=True)})  # fmt: skip
        return all(record.get("status") in FINISHED for record in records.values())

    with suppress(TimeoutError):  # the unfinished jobs are counted as lost
        wait_until(all_finished, timeout_s, "every accepted job finished")
    return records


@dataclass
class Outcome:
    """One row of the reliability table."""

    fault: str
    promise: str
    accepted: int = 0
    finished: int = 0
    lost: int = 0
    answered_twice: int = 0
    without_answer: int = 0
    refused_503: int = 0
    sent_again: int = 0
    recovery_s: float | None = None
    sent_again_recovery_s: float | None = None
    measured: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls, fault: str, promise: str, clients: Clients, records: dict[str, dict],
        notices: Notices, fault_at: float | None = None, **measured: Any,
    ) -> Outcome:  # fmt: skip
        """Account for every request and every accepted job after a fault at ``fault_at``.

        The recovery time is how long after the fault the last job accepted before it
        finished (a job accepted later had no fault to recover from), apart for the
        jobs the broker lost and a worker sent again from their records.
        """
        finished = {job_id: record for job_id, record in records.items()
                    if record.get("status") in FINISHED}  # fmt: skip

        def recovery(sent_again: bool) -> float | None:
            after = [
                timestamp(record["finished_at"]) - fault_at
                for record in finished.values()
                if fault_at is not None and timestamp(record["created_at"]) < fault_at
                and ("sent_again_at" in record) == sent_again
            ]  # fmt: skip
            return round(max(0.0, *after), 1) if after else None

        return cls(
            fault, promise,
            accepted=len(records),
            finished=len(finished),
            lost=len(records) - len(finished),
            answered_twice=sum(1 for job_id in records if notices.counts[job_id] > 1),
            without_answer=sum(1 for a in clients.attempts if a.status is None
                               or (a.status >= 500 and not (a.status == 503 and a.retry_after))),
            refused_503=sum(1 for a in clients.attempts if a.status == 503 and a.retry_after),
            sent_again=sum(1 for record in records.values() if "sent_again_at" in record),
            recovery_s=recovery(sent_again=False),
            sent_again_recovery_s=recovery(sent_again=True),
            measured=measured,
        )  # fmt: skip

    def assert_kept(self) -> None:
        """The promises every scenario keeps."""
        assert self.lost == 0, self
        assert self.answered_twice == 0, self

    def assert_recovered(self) -> None:
        """The jobs of before the fault finished within ``RECOVERY_S``, those the
        broker kept (their lease ran out) and those it lost (sent again) alike."""
        recoveries = [s for s in (self.recovery_s, self.sent_again_recovery_s) if s is not None]
        assert recoveries and max(recoveries) <= RECOVERY_S, self
        assert self.without_answer == 0, self


def described(name: str, value: Any) -> str:
    """``left_health_after_s``, 4.1 -> ``left health after: 4.1 s``."""
    for suffix, unit in (("_ms", " ms"), ("_s", " s")):
        if name.endswith(suffix):
            return f"{name.removesuffix(suffix).replace('_', ' ')}: {value}{unit}"
    return f"{name.replace('_', ' ')}: {value}"


class Load:
    """Photos sent back to back by ``clients`` clients, every outcome notice counted:
    the load a fault lands in. It is steady (100 results) before the fault."""

    def __init__(self, redis: Redis, base_url: str, clients: int = 12, wait_s: float = 10):
        self.redis = redis
        self.notices = Notices(redis)
        self.clients = Clients(clients, post_photo(base_url, photo(), wait_s))
        self.clients.wait_for_answers(100)

    def outcome(self, fault: str, promise: str, fault_at: float, **measured: Any) -> Outcome:
        """Go on until 100 more results, stop, let every accepted job finish, account."""
        self.clients.wait_for_answers(100, since=time.time())
        self.clients.stop()
        records = settle(self.redis, self.clients.job_ids)
        self.notices.close()
        return Outcome.of(fault, promise, self.clients, records, self.notices, fault_at,
                          **measured)  # fmt: skip


def render(outcomes: list[Outcome]) -> str:
    """``docs/RELIABILITY.md`` from the rows the suite measured."""
    lines = [
        "# Reliability",
        "",
        "What the service promises under each fault, and what the fault-injection suite",
        "(`tests/test_faults.py`, real processes: Redis, Celery workers, gunicorn) measured",
        "in its last run. Regenerate with `make reliability`, which runs the suite and",
        "rewrites this file. How each promise is kept: the README's Reliability section.",
        "",
        "- **accepted**: jobs whose id a client learnt (a 200 with the result, or a 202);",
        "- **lost**: accepted jobs not finished (succeeded or failed) once the fault was over;",
        "- **answered twice**: jobs whose outcome was announced more than once (every",
        "  outcome notice on Redis is counted);",
        "- **without answer**: requests that got no HTTP answer (a reset connection, a",
        "  timeout) or a 5xx other than a 503 with `Retry-After`;",
        "- **503 refused**: requests refused with 503 and `Retry-After` (nothing accepted);",
        "- **recovery**: seconds from the fault until the last job accepted before it finished;",
        "- **sent again**: jobs sent again from their records after `REDELIVER_AFTER_S`",
        "  without progress, and when the last of them finished (not counted in the",
        "  recovery before): a message the broker lost (kombu pops a message, then records",
        "  it as held: a worker killed or cut off between the two takes it along), or an",
        "  evaluation whose chunks' leases had not run out yet.",
        "",
        "| fault | promise | accepted | lost | answered twice | without answer "
        "| 503 refused | recovery (s) | sent again (s) | also measured |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in outcomes:
        measured = "; ".join(described(name, value) for name, value in row.measured.items())
        recovery = "" if row.recovery_s is None else f"{row.recovery_s:g}"
        sent_again = str(row.sent_again)
        if row.sent_again_recovery_s is not None:
            sent_again += f" ({row.sent_again_recovery_s:g})"
        lines.append(
            f"| {row.fault} | {row.promise} | {row.accepted} | {row.lost} | "
            f"{row.answered_twice} | {row.without_answer} | {row.refused_503} | "
            f"{recovery} | {sent_again} | {measured} |"
        )
    return "\n".join(lines) + "\n"


@dataclass
class Up:
    """A running ``ecosnap up``: its process, what it printed, its API and its Redis."""

    process: subprocess.Popen
    lines: list[str]
    base_url: str

    def printed(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    @property
    def redis_url(self) -> str:
        line = next(line for line in self.lines if "private Redis at " in line)
        return line.split("private Redis at ", 1)[1].split()[0]

    def child(self, marker: str) -> int:
        """The pid of the child whose command line contains ``marker``."""
        from bench.procfs import children

        for pid in children(self.process.pid):
            if marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                return pid
        raise LookupError(f"no child of {self.process.pid} runs {marker!r}")


@contextmanager
def ecosnap_up(var_dir: Path, *options: str) -> Iterator[Up]:
    """``ecosnap up`` (with ``options``) on a free port with its own var folder and
    private Redis, ready; stopped with SIGTERM afterwards (the caller may stop it first)."""
    import sys

    from common.settings import PROJECT_ROOT

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "GCS_BUCKET"}}
    env |= {"ECOSNAP_VAR_DIR": str(var_dir), "PYTHONUNBUFFERED": "1", **UNLIMITED}
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "up", "--port", str(port), *options],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    up = Up(process, [], f"http://127.0.0.1:{port}")
    reader = threading.Thread(target=lambda: up.lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        wait_until(lambda: up.printed("Ready:"), 180, "ecosnap up", process)
        yield up
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(90)
        reader.join(5)
