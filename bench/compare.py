"""EcoSnap against the servers people would deploy instead, side by side in one run.

Same photos, same ONNX model file, same preprocessing (``common.preprocessing``),
same keep-alive client (``bench.load``) for every system:

- ``ecosnap``: the stack as ``ecosnap up`` runs it (private Redis, the predict and
  evaluate workers, gunicorn 2 x 16), answering ``POST /predict?wait=30``;
- ``flask``: a plain Flask app under the same gunicorn command, ONNX Runtime on
  each request (batch of one, one ONNX thread per process: the fastest such set-up
  here), ``bench/peers/flask_onnx.py``;
- ``bentoml``: BentoML 1.4 with adaptive batching (``bench/peers/bentoml_service.py``),
  from its own virtual environment (``make bench-peers``); left out, with the reason
  printed, where that environment is missing.

Two models: the shipped demo CNN, and a MobileNetV2 (width 1.0, 128x128, random
weights) whose inference dominates. The systems run side by side and are measured
in alternating rounds (the order rotates), so a machine that speeds up or slows down
affects them alike; ratios are per round and their medians.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from redis import Redis

from bench.load import Clients
from bench.procfs import cpu_ms_per_request, descendants, memory_mb
from common.heartbeat import live_workers
from common.labels import CLASSES
from common.model_metadata import ModelMetadata
from common.processes import (
    API_PROCESSES,
    free_port,
    http_ok,
    spawn,
    start_api,
    start_redis,
    start_workers,
    stop,
    wait_until,
)
from common.settings import PROJECT_ROOT
from worker.conversion import accelerate, cached_onnx
from worker.inference import prepare_each
from worker.runtime import load_runtime

SYSTEMS = ("ecosnap", "flask", "bentoml")
MODELS = ("demo", "mobilenet_v2")
BENTOML = PROJECT_ROOT / ".venv-bentoml" / "bin" / "bentoml"
START_TIMEOUT_S = 300


@dataclass
class System:
    """A running server: where to post photos and which processes are it, by role
    (EcoSnap's API, workers and Redis; one role ``server`` for a peer)."""

    name: str
    port: int
    path: str
    roles: dict[str, Any] = field(default_factory=dict)
    ready: Callable[[], bool] = lambda: True

    def role_pids(self) -> dict[str, list[int]]:
        return {role: [p.pid, *descendants(p.pid)] for role, p in self.roles.items()}

    def pids(self) -> list[int]:
        return [pid for pids in self.role_pids().values() for pid in pids]


def build_model(name: str, folder: Path) -> Path:
    """The model file (with its metadata beside it) that every system serves."""
    if name == "demo":
        return PROJECT_ROOT / "models" / "default.h5"
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(
        input_shape=(128, 128, 3), alpha=1.0, weights=None, classes=len(CLASSES)
    )
    path = folder / "mobilenet_v2.h5"
    model.save(path)
    description = "MobileNetV2 (width 1.0, 128x128) with random weights, for the benchmark."
    ModelMetadata.of_file(path, "bench-mobilenet-v2", description).write_for(path)
    return path


def onnx_of(model_path: Path, cache_dir: Path) -> Path:
    """The ONNX file the EcoSnap worker will serve (converted once, checked for parity)."""
    runtime = accelerate(load_runtime(model_path), cache_dir)
    path = cached_onnx(cache_dir, runtime.metadata.sha256)
    if not path.exists():
        raise RuntimeError(f"{model_path.name} did not convert to ONNX; see the log above.")
    return path


def in_process(model_path: Path, cache_dir: Path, photos: list[bytes], batch: int) -> dict:
    """What no server can beat: decoding and inference in this process, batched and not.

    ``limit_cpu_ms_per_photo`` decodes on the worker's threads and infers ``batch``
    images per call, as the EcoSnap worker does; the inference times per image at
    batch 1 and at ``batch`` show what batching itself saves with this model here.
    """
    runtime = accelerate(load_runtime(model_path), cache_dir)

    def run() -> None:
        for start in range(0, len(photos), batch):
            readers = [lambda data=data: data for data in photos[start : start + batch]]
            runtime.predict(np.stack(list(prepare_each(readers, runtime.metadata, 10**9))))

    def inference_cpu_ms(size: int) -> float:
        images = np.stack(list(prepare_each([lambda: photos[0]] * size, runtime.metadata, 10**9)))
        calls = max(1, 256 // size)
        return cpu_ms_per_request({}, lambda: [runtime.predict(images) for _ in range(calls)],
                                  calls * size)["bench"]  # fmt: skip

    run()
    return {
        "limit_cpu_ms_per_photo": cpu_ms_per_request({}, run, len(photos))["bench"],
        "inference_cpu_ms_per_image_batch_1": inference_cpu_ms(1),
        f"inference_cpu_ms_per_image_batch_{batch}": inference_cpu_ms(batch),
    }


def start_ecosnap(model_path: Path, var_dir: Path) -> System:
    redis_process, redis_url = start_redis(var_dir / "redis")
    env = {"REDIS_URL": redis_url, "ECOSNAP_VAR_DIR": str(var_dir), "MODEL_PATH": str(model_path)}
    port = free_port()
    workers = start_workers(env, var_dir)
    api = start_api(env, port, log_path=var_dir / "api.log")
    predict_worker, evaluate_worker = workers
    roles = {"redis": redis_process, "predict_worker": predict_worker,
             "evaluate_worker": evaluate_worker, "api": api}  # fmt: skip
    system = System("ecosnap", port, "/predict?wait=30", roles)

    def ready() -> bool:
        return (
            http_ok(f"http://127.0.0.1:{port}/health")
            and len(live_workers_at(redis_url)) == len(workers)
            and len(descendants(api.pid)) == API_PROCESSES
        )

    system.ready = ready
    return system


def live_workers_at(redis_url: str) -> list[dict]:
    with Redis.from_url(redis_url) as redis:
        return live_workers(redis)


def peer_env(model_path: Path, onnx_path: Path) -> dict[str, str]:
    return {"PEER_MODEL": str(model_path), "PEER_ONNX": str(onnx_path), "PEER_ONNX_THREADS": "1"}


def start_flask(model_path: Path, onnx_path: Path, var_dir: Path) -> System:
    port = free_port()
    # 2 processes x 16 threads, one ONNX thread each: the fastest such set-up here.
    server = start_api(
        peer_env(model_path, onnx_path), port, workers=2, threads=16,
        log_path=var_dir / "flask.log", app="bench.peers.flask_onnx:app",
    )  # fmt: skip
    system = System("flask", port, "/predict", {"server": server})
    system.ready = lambda: (
        http_ok(f"http://127.0.0.1:{port}/health") and len(descendants(server.pid)) == 2
    )
    return system


def start_bentoml(model_path: Path, onnx_path: Path, var_dir: Path) -> System:
    port = free_port()
    env = peer_env(model_path, onnx_path) | {
        "BENTOML_HOME": str(var_dir / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    command = [str(BENTOML), "serve", "bench.peers.bentoml_service:Classifier", "--port", str(port)]
    server = spawn(command, env, var_dir / "bentoml.log")
    system = System("bentoml", port, "/predict", {"server": server})
    system.ready = lambda: http_ok(f"http://127.0.0.1:{port}/readyz")
    return system


def measure(system: System, photos: list[bytes], clients: int, single: int) -> dict[str, Any]:
    """Throughput and server CPU per photo under ``clients``, then one client's latency."""
    with Clients(system.port, photos, clients, system.path) as load:
        load.run(clients * 2)
        roles = system.role_pids()
        timed: dict[str, float] = {}

        def run() -> None:
            start = time.perf_counter()
            load.run(len(photos))
            timed["s"] = time.perf_counter() - start

        cpu = cpu_ms_per_request(roles, run, len(photos))
    with Clients(system.port, photos, 1, system.path) as lone:
        for index in range(10):
            lone.post(index)
        latencies = sorted(lone.post(index) for index in range(single))
    client = cpu.pop("bench")
    return {
        "images_per_s": len(photos) / timed["s"],
        "server_cpu_ms_per_photo": sum(cpu.values()),
        **({f"cpu_ms_per_photo_{role}": ms for role, ms in cpu.items()} if len(cpu) > 1 else {}),
        "client_cpu_ms_per_photo": client,
        "p50_ms_1client": statistics.median(latencies),
        "p95_ms_1client": latencies[int(0.95 * (len(latencies) - 1))],
    }


def compare_model(
    model: str, systems: list[str], photos: list[bytes], rounds: int, clients: int, single: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        var_dir = Path(tmp)
        model_path = build_model(model, var_dir)
        cache_dir = var_dir / "model-cache"
        onnx_path = onnx_of(model_path, cache_dir)
        pipeline = in_process(model_path, cache_dir, photos, 32)
        starters = {
            "ecosnap": lambda: start_ecosnap(model_path, var_dir),
            "flask": lambda: start_flask(model_path, onnx_path, var_dir),
            "bentoml": lambda: start_bentoml(model_path, onnx_path, var_dir),
        }
        running = [starters[name]() for name in systems]
        try:
            for system in running:
                wait_until(system.ready, START_TIMEOUT_S, f"{system.name} ({model})")
            per_round: list[dict[str, dict]] = []
            for number in range(rounds):
                order = running[number % len(running) :] + running[: number % len(running)]
                per_round.append({s.name: measure(s, photos, clients, single) for s in order})
                print(f"  {model} round {number + 1}: " + ", ".join(
                    f"{name} {r['images_per_s']:.0f}/s" for name, r in per_round[-1].items()
                ), flush=True)  # fmt: skip
            rss = {s.name: sum(memory_mb(pid) for pid in s.pids()) for s in running}
            processes = {s.name: len(s.pids()) for s in running}
        finally:
            for system in running:
                for process in reversed(system.roles.values()):
                    stop(process)
    return pipeline | summarise(per_round, rss, processes, pipeline["limit_cpu_ms_per_photo"])


def summarise(
    per_round: list[dict[str, dict]], rss: dict[str, float], processes: dict[str, int], limit: float
) -> dict[str, Any]:
    """Medians per system, EcoSnap's ratio to each peer per round and their median."""
    names = list(per_round[0])
    medians = {
        name: {
            metric: statistics.median(r[name][metric] for r in per_round)
            for metric in per_round[0][name]
        }
        | {"rss_mb": rss[name], "processes": processes[name]}
        for name in names
    }
    result: dict[str, Any] = {"systems": medians}
    if "ecosnap" in names:
        result["ecosnap_cpu_ms_above_limit"] = medians["ecosnap"]["server_cpu_ms_per_photo"] - limit
        for peer in (name for name in names if name != "ecosnap"):
            ratios = [r["ecosnap"]["images_per_s"] / r[peer]["images_per_s"] for r in per_round]
            result[f"ecosnap_vs_{peer}"] = {
                "per_round": ratios,
                "median": statistics.median(ratios),
            }
    return result


def available_systems(wanted: list[str]) -> tuple[list[str], dict[str, str]]:
    """The systems that can run here, and why any other cannot."""
    missing = {}
    if "bentoml" in wanted and not BENTOML.exists():
        missing["bentoml"] = f"{BENTOML} is missing: run `make bench-peers` to install it."
    return [name for name in wanted if name not in missing], missing


def compare(
    photos: list[bytes], systems: list[str], models: list[str], rounds: int, clients: int,
    single: int,
) -> dict[str, Any]:  # fmt: skip
    runnable, missing = available_systems(systems)
    for name, reason in missing.items():
        print(f"  left out {name}: {reason}")
    return {
        "compare_systems": runnable,
        "compare_left_out": missing,
        "compare": {
            model: compare_model(model, runnable, photos, rounds, clients, single)
            for model in models
        },
    }
