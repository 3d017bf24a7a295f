"""What one worker process holds, in one object built when the process starts.

Celery imports the tasks module in every process that sends or receives tasks, but
only a worker process loads models: ``WorkerState.start`` runs from the
``worker_init`` signal, and the tasks reach the result through ``current()``.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field

from common.batch_stats import Capacity
from common.heartbeat import beat_unless_redis_is_down, retire, start_heartbeat
from common.jobs import JobStore
from common.preprocessing import DecodeBudget, ImageLimits
from common.redis_client import bounded_redis
from common.registry import registry_from_settings
from common.settings import Settings
from common.storage import Storage, storage_from_settings
from worker import metrics
from worker.celery import app
from worker.devices import Device, resolve
from worker.housekeeping import start_upload_sweeper
from worker.models import ServedModels, watch_activations
from worker.redelivery import start_redelivery
from worker.runtime import CPU

# Each attempt of a worker's Redis call, and how many more after a failure: about
# 6 s of waiting between attempts in all.
WORKER_REDIS_TIMEOUT_S = 5.0
WORKER_REDIS_RETRIES = 8


@dataclass
class WorkerState:
    """The models this process serves, its storage and job store, and the stop
    switches of its background threads (heartbeat, activation watcher, redelivery of
    lost messages, upload sweeper)."""

    settings: Settings
    models: ServedModels
    storage: Storage
    jobs: JobStore
    # Its heartbeat's name, also in the jobs it starts: unique among every worker
    # process on every host.
    name: str
    background: list[threading.Event] = field(default_factory=list)
    # Each image's bounds, and the memory budget its decoding threads share.
    image_limits: ImageLimits = field(default_factory=ImageLimits)
    capacity: Capacity = field(default_factory=Capacity)
    # The queues this worker consumes, known once Celery has set the worker up.
    queues: list[str] = field(default_factory=list)
    device: Device = CPU

    @property
    def batch_size(self) -> int:
        """The most images per model call, and per batch of messages: a GPU's larger."""
        return (self.settings.gpu_batch_max_size if self.device.is_gpu
                else self.settings.batch_max_size)  # fmt: skip

    @property
    def batch_wait_s(self) -> float:
        wait_ms = (self.settings.gpu_batch_max_wait_ms if self.device.is_gpu
                   else self.settings.batch_max_wait_ms)  # fmt: skip
        return wait_ms / 1000

    @classmethod
    def start(cls, settings: Settings) -> WorkerState:
        """Pick the device, load and warm the active model, then report in and follow
        activations."""
        device = resolve(settings.device)
        storage = storage_from_settings(settings)
        registry = registry_from_settings(settings, storage)
        registry.import_configured(settings.model_path)
        models = ServedModels(registry, settings.var_dir / "model-cache",
                              accelerated=settings.accelerate == "onnx", device=device)  # fmt: skip
        models.refresh()
        # Long enough to ride out a restart of the private Redis (a second or two).
        redis = bounded_redis(settings.redis_url, WORKER_REDIS_TIMEOUT_S, WORKER_REDIS_RETRIES)
        name = f"{socket.gethostname()}:{os.getpid()}"
        jobs = JobStore(redis, settings.result_ttl_s, worker=name)
        budget = DecodeBudget(settings.decode_budget_bytes)
        limits = ImageLimits.from_settings(settings, budget)
        state = cls(settings, models, storage, jobs, name,
                    image_limits=limits, device=device)  # fmt: skip
        state.background += [
            start_heartbeat(redis, state.name, state.heartbeat_info, settings.heartbeat_interval_s),
            watch_activations(redis, models, settings.heartbeat_interval_s),
            start_redelivery(jobs, app, settings.redeliver_after_s),
        ]
        return state

    def heartbeat_info(self) -> dict[str, object]:
        """What ``/health`` and ``GET /models`` show of this worker, read at every beat;
        the metrics' model gauge follows it."""
        active = self.models.active
        runtime = type(active).__name__
        metrics.serving(active.metadata.version, runtime, str(self.device), active.batching)
        return {
            "pid": os.getpid(),
            "model_version": active.metadata.version,
            "runtime": runtime,
            "batching": active.batching,
            "metrics_port": self.settings.worker_metrics_port or None,
            "load_error": self.models.load_error,
            "queues": self.queues,
            "photos_per_s": round(self.capacity.photos_per_s, 1),
            "device": str(self.device),
            "device_reason": self.device.reason,
        }

    def consume(self, queues: list[str]) -> None:
        """Take note of the queues this worker consumes, and say so at once: until
        a heartbeat names them, ``/readyz`` counts this worker for no queue."""
        self.queues = sorted(queues)
        beat_unless_redis_is_down(self.jobs.redis, self.name, self.heartbeat_info(),
                                  self.settings.heartbeat_interval_s)  # fmt: skip

    def sweep_uploads(self) -> None:
        """Start removing expired uploads (``UPLOAD_RETENTION_S=0`` keeps them forever)."""
        if self.settings.upload_retention_s:
            self.background.append(start_upload_sweeper(self.storage, self.settings))

    def stop(self) -> None:
        """Stop the background threads and leave ``/readyz`` at once, not after the
        heartbeat expires."""
        for switch in self.background:
            switch.set()
        retire(self.jobs.redis, self.name)


_current: WorkerState | None = None


def begin(settings: Settings) -> WorkerState:
    """Build this process's state; called once, from ``worker_init``."""
    global _current
    _current = WorkerState.start(settings)
    return _current


def current() -> WorkerState:
    """This worker process's state; only a started worker has one."""
    if _current is None:
        raise RuntimeError("No worker state: tasks run only in a started worker process.")
    return _current
