"""The model versions a worker serves, and how it follows activations without a restart.

A worker holds the active version's runtime plus a few recent ones, so an evaluation
that started on one version finishes on it even after another is activated. A
switch loads the new version on the watcher thread and then replaces one reference:
a prediction batch takes that reference once when it starts, so every job in it is
answered by one version, and predictions never wait for a switch. (An evaluation
chunk of a version this worker does not hold loads it first, on the consumer.)
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

from redis import Redis, RedisError

from common.model_metadata import ModelMetadata, model_format
from common.registry import ACTIVATION_CHANNEL, ModelRegistry
from worker.conversion import accelerated_copy
from worker.devices import Device
from worker.runtime import (
    CPU,
    KERAS_FORMATS,
    ModelRuntime,
    OnnxRuntime,
    load_runtime,
    on_device,
    warmed,
)

log = logging.getLogger(__name__)

KEEP_VERSIONS = 3


class ServedModels:
    """Runtimes by version (the active one and the last few used), loaded on demand."""

    def __init__(
        self, registry: ModelRegistry, cache_dir: Path, accelerated: bool, device: Device = CPU
    ) -> None:
        self.registry = registry
        self.device = device
        self._cache_dir = cache_dir
        self._accelerated = accelerated
        self._runtimes: OrderedDict[str, ModelRuntime] = OrderedDict()
        self._lock = threading.Lock()
        # Activations (version and time) whose model failed to load here: not retried
        # until the version is activated again.
        self._failed: set[tuple[str, str]] = set()
        self.load_error: str | None = None
        self.active: ModelRuntime | None = None

    def load(self, version: str) -> ModelRuntime:
        """A fresh runtime for ``version``: a Keras model through its checked ONNX copy
        when accelerated (this process then never imports TensorFlow), else as it is."""
        path = self.registry.model_path(version)
        if self._accelerated and model_format(path) in KERAS_FORMATS:
            metadata = ModelMetadata.for_model(path)
            onnx_path = accelerated_copy(path, metadata.sha256, self._cache_dir)
            if onnx_path is not None:
                return warmed(on_device(OnnxRuntime(onnx_path, metadata, self.device), self.device))
        return load_runtime(path, device=self.device)

    def runtime(self, version: str) -> ModelRuntime:
        """The runtime of ``version``, loading it (outside the lock) if it is not held."""
        with self._lock:
            if version in self._runtimes:
                self._runtimes.move_to_end(version)
                return self._runtimes[version]
        runtime = self.load(version)
        with self._lock:
            runtime = self._runtimes.setdefault(version, runtime)
            self._runtimes.move_to_end(version)
            served = self.active.metadata.version if self.active else version
            for old in [v for v in self._runtimes if v not in (served, version)]:
                if len(self._runtimes) <= KEEP_VERSIONS:
                    break
                del self._runtimes[old]
        return runtime

    def refresh(self) -> bool:
        """Serve the registry's active version; ``True`` if this switched models.

        A version that fails to load is logged, reported in ``load_error`` (the
        heartbeat carries it) and skipped until it is activated again: the worker
        goes on serving what it has rather than failing every job.
        """
        active = self.registry.active()
        version = active["version"]
        activation = (version, active["history"][-1]["activated_at"] if active["history"] else "")
        if version is None or activation in self._failed:
            return False
        if self.active is not None and self.active.metadata.version == version:
            return False
        try:
            runtime = self.runtime(version)
        except Exception as exc:
            if self.active is None:
                raise
            log.exception("Could not load model version %s; still serving %s",
                          version, self.active.metadata.version)  # fmt: skip
            self._failed.add(activation)
            self.load_error = f"version {version}: {type(exc).__name__}: {exc}"
            return False
        self.active, self.load_error = runtime, None
        log.info("Now serving model version %s", version)
        return True


def watch_activations(redis: Redis, models: ServedModels, interval_s: float) -> threading.Event:
    """Follow activations in a daemon thread until the returned event is set.

    A notice on ``ACTIVATION_CHANNEL`` wakes it at once; without one it still looks
    at the registry every ``interval_s``, so a lost notice only delays a switch.
    """
    stop = threading.Event()

    def run() -> None:
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        while not stop.is_set():
            try:
                if not pubsub.subscribed:
                    pubsub.subscribe(ACTIVATION_CHANNEL)
                pubsub.get_message(timeout=interval_s)
            except RedisError:
                pubsub.reset()
                stop.wait(interval_s)
            try:
                models.refresh()
            except Exception:
                log.exception("Could not follow the registry")
                stop.wait(interval_s)

    threading.Thread(target=run, name="ecosnap-models", daemon=True).start()
    return stop
