"""Measure the pipeline's ceiling, the seed's way and the real stack, in one run.

Same images, same model, same machine: ``limit_images_per_s`` (decode, preprocess
and batched inference in this process), ``naive_images_per_s`` (one
``model.predict`` per image, as the seed did), then a real stack (private Redis,
the two Celery workers of ``ecosnap up``, gunicorn) measured over HTTP, with the
CPU each process spends per request and the frameworks' own floor (``bench.floor``).
"""

from __future__ import annotations

import argparse
import http.client
import io
import itertools
import json
import os
import statistics
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from redis import Redis

from bench.compare import MODELS, SYSTEMS, compare
from bench.floor import framework_floor, usable_cpus
from bench.load import PREDICT_PATH, Clients, multipart
from bench.memory import memory_bound
from bench.procfs import children, cpu_ms_per_request, loads_tensorflow, memory_mb
from bench.scaling import scaling
from common.batch_stats import batch_sizes
from common.client import Client
from common.heartbeat import live_workers
from common.labels import CLASSES
from common.preprocessing import ImageLimits, decode_for_model, preprocess
from common.processes import (
    API_PROCESSES,
    free_port,
    http_ok,
    start_api,
    start_redis,
    start_workers,
    stop,
    wait_until,
)
from common.settings import Settings
from training.synthetic import draw_photo, jpeg_bytes
from worker.conversion import accelerate
from worker.inference import prepare_each
from worker.runtime import load_runtime

SMALL, PHONE = (512, 384), (4000, 3000)


def make_images(count: int, size: tuple[int, int], seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [jpeg_bytes(draw_photo(CLASSES[i % 6], rng, size)) for i in range(count)]


def throughput(run, count: int) -> float:
    start = time.perf_counter()
    run()
    return count / (time.perf_counter() - start)


def median_ms(run, repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings)


def in_process(settings: Settings, small: list[bytes], phone: list[bytes], batch: int) -> dict:
    """The pipeline without queue or HTTP: the ceiling, and the seed's way."""
    keras_runtime = load_runtime(settings.model_path)
    runtime = (
        accelerate(keras_runtime, settings.var_dir / "model-cache")
        if settings.accelerate == "onnx"
        else keras_runtime
    )
    meta = runtime.metadata
    whole = ImageLimits(max_pixels=10**9, max_decoded_bytes=10**10)

    def prepare(data: bytes) -> np.ndarray:
        return preprocess(data, meta.input_size, meta.preprocessing)

    def full_decode() -> np.ndarray:  # of a 12 MP photo, at its own size
        return decode_for_model(phone[0], PHONE, limits=whole)

    def batched(images: list[bytes]) -> None:
        """Decoded on the worker's threads and classified as the worker does."""
        for start in range(0, len(images), batch):
            readers = [lambda data=data: data for data in images[start : start + batch]]
            runtime.predict(np.stack(list(prepare_each(readers, meta, settings.max_image_pixels))))

    batched(small[:batch])
    naive_images = small[:60]
    one = prepare(small[0])[None]
    start = time.perf_counter()
    limit_cpu = cpu_ms_per_request({}, lambda: batched(small), len(small))["bench"]
    return {
        "runtime": type(runtime).__name__,
        "limit_images_per_s": len(small) / (time.perf_counter() - start),
        "limit_cpu_ms_per_image": limit_cpu,
        "limit_images_per_s_12mp": throughput(lambda: batched(phone), len(phone)),
        "naive_images_per_s": throughput(
            lambda: [
                keras_runtime.model.predict(prepare(d)[None], verbose=0) for d in naive_images
            ],
            len(naive_images),
        ),
        "inference_ms_1image": median_ms(lambda: runtime.predict(one), 50),
        "inference_ms_batch": median_ms(lambda: runtime.predict(np.repeat(one, batch, 0)), 20),
        "preprocess_ms_12mp": median_ms(lambda: prepare(phone[0]), 9),
        "full_decode_ms_12mp": median_ms(full_decode, 3),
    }


def over_http(
    port: int, small: list[bytes], clients: int, single: int, roles: dict[str, list[int]]
) -> dict:
    """Latency with one client, then throughput and CPU per request with many."""
    with Clients(port, small, clients) as load:
        for index in range(10):
            load.post(index)
        latencies = sorted(load.post(index) for index in range(single))
        load.run(clients)
        start = time.perf_counter()
        cpu = cpu_ms_per_request(roles, lambda: load.run(len(small)), len(small))
        elapsed = time.perf_counter() - start
    return {
        "p50_ms_1client": statistics.median(latencies),
        "p95_ms_1client": latencies[int(0.95 * (len(latencies) - 1))],
        "e2e_images_per_s": len(small) / elapsed,
        "e2e_clients": clients,
        "e2e_cpu_ms_per_request": cpu,
    }


def dataset_zip(images: list[bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, data in enumerate(images):
            archive.writestr(f"dataset/test/{CLASSES[index % 6]}/{index:05d}.jpg", data)
    return buffer.getvalue()


def evaluation_alone(port: int, archive: bytes) -> dict:
    """The evaluation rate with nothing else to do: the pipeline's efficiency."""
    client = Client(f"http://127.0.0.1:{port}", timeout_s=600)
    job = client.wait_for(client.evaluate(archive)["job_id"], timeout_s=600)
    result = job["result"]
    return {"eval_alone_images_per_s": result["images"] / result["duration_s"]}


def during_evaluation(port: int, archive: bytes, small: list[bytes], worker_pid: int) -> dict:
    """One client's prediction latency while a dataset is evaluated, and the evaluation rate."""
    client = Client(f"http://127.0.0.1:{port}", timeout_s=600)
    rss_before = memory_mb(worker_pid)
    job_id = client.evaluate(archive)["job_id"]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    latencies, peak_rss = [], rss_before
    for index in itertools.count():
        job = client.job(job_id)
        if job["status"] not in ("queued", "running"):
            break
        body, content_type = multipart(small[index % len(small)])
        start = time.perf_counter()
        connection.request("POST", PREDICT_PATH, body, {"Content-Type": content_type})
        connection.getresponse().read()
        latencies.append((time.perf_counter() - start) * 1000)
        peak_rss = max(peak_rss, memory_mb(worker_pid))
    latencies.sort()
    return {
        "p95_ms_predict_during_eval": latencies[int(0.95 * (len(latencies) - 1))],
        "predictions_during_eval": len(latencies),
        "eval_images": job["result"]["images"],
        "eval_images_per_s": job["result"]["images"] / job["result"]["duration_s"],
        "worker_rss_growth_mb": peak_rss - rss_before,
    }


def stack_metrics(
    settings: Settings, small: list[bytes], archive: bytes, clients: int, single: int
) -> dict:
    with tempfile.TemporaryDirectory() as var_dir:
        redis_process, redis_url = start_redis(Path(var_dir) / "redis")
        env = {
            "REDIS_URL": redis_url,
            "ECOSNAP_VAR_DIR": var_dir,
            "MODEL_PATH": str(settings.model_path),
            "ACCELERATE": settings.accelerate,
        }
        port = free_port()
        workers = start_workers(env, Path(var_dir))
        predict_worker, evaluate_worker = workers
        api = start_api(env, port, log_path=Path(var_dir) / "api.log")
        base = f"http://127.0.0.1:{port}"
        redis = Redis.from_url(redis_url)
        try:
            wait_until(
                lambda: (
                    http_ok(f"{base}/health")
                    and len(live_workers(redis)) == 2
                    and len(children(api.pid)) == API_PROCESSES
                ),
                180,
                "bench stack",
                predict_worker,
            )
            roles = {
                "api": [api.pid, *children(api.pid)],
                "predict_worker": [predict_worker.pid],
                "redis": [redis_process.pid],
            }
            result = over_http(port, small, clients, single, roles)
            result |= during_evaluation(port, archive, small, evaluate_worker.pid)
            result |= evaluation_alone(port, archive)
            api_pids = [api.pid, *children(api.pid)]
            result |= {
                "batch_sizes": batch_sizes(redis),
                "api_peak_rss_mb": max(memory_mb(pid, "VmHWM") for pid in api_pids),
                "api_processes": len(api_pids),
                "api_loads_tensorflow": any(loads_tensorflow(pid) for pid in api_pids),
            }
        finally:
            for process in (api, *workers, redis_process):
                stop(process)
    return result


def rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    return round(value, 2) if isinstance(value, float) else value


def stack_benchmark(
    settings: Settings, small: list[bytes], phone: list[bytes], args: argparse.Namespace
) -> dict[str, Any]:
    """The pipeline's limit, the frameworks' floor and the full stack with evaluations."""
    results = in_process(settings, small, phone, settings.batch_max_size)
    results |= framework_floor(small, args.clients, results["limit_cpu_ms_per_image"])
    archive = dataset_zip(make_images(args.eval_images, SMALL, seed=3))
    results |= stack_metrics(settings, small, archive, args.clients, args.single)
    results["eval_vs_limit"] = results["eval_images_per_s"] / results["limit_images_per_s"]
    results["eval_alone_vs_limit"] = (
        results["eval_alone_images_per_s"] / results["limit_images_per_s"]
    )
    results["e2e_vs_limit"] = results["e2e_images_per_s"] / results["limit_images_per_s"]
    results["e2e_vs_naive"] = results["e2e_images_per_s"] / results["naive_images_per_s"]
    results["ceiling_e2e_vs_limit"] = (
        results["ceiling_e2e_images_per_s"] / results["limit_images_per_s"]
    )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--images", type=int, default=600, help="512x384 images")
    parser.add_argument("--phone-images", type=int, default=32, help="4000x3000 images")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--single", type=int, default=100, help="one-client requests")
    parser.add_argument("--eval-images", type=int, default=2000, help="images in the eval zip")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--compare-only",
        action="store_true",
        help="only the side-by-side comparison with the peers",
    )
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help="systems compared side by side"
    )
    parser.add_argument(
        "--memory-only", action="store_true", help="only the memory bound per image"
    )
    parser.add_argument(
        "--scaling-only",
        action="store_true",
        help="only the scaling with 1-8 workers on a simulated accelerator",
    )
    parser.add_argument("--models", default=",".join(MODELS), help="models compared")
    parser.add_argument("--rounds", type=int, default=3, help="alternating comparison rounds")
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    small = make_images(args.images, SMALL, seed=1)
    phone = make_images(args.phone_images, PHONE, seed=2)
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "usable_cpus": usable_cpus()},
        "images": {"512x384": len(small), "4000x3000": len(phone)},
        "batch_max_size": settings.batch_max_size,
        "batch_max_wait_ms": settings.batch_max_wait_ms,
    }
    only = args.compare_only or args.memory_only or args.scaling_only
    if args.memory_only or not only:
        results["memory_bound"] = memory_bound(settings)
    if args.scaling_only or not only:
        results["scaling"] = scaling(usable_cpus())
    if not only:
        results |= stack_benchmark(settings, small, phone, args)
    if args.compare_only or not only:
        results |= compare(small, args.systems.split(","), args.models.split(","), args.rounds,
                           args.clients, args.single)  # fmt: skip
    for name, value in results.items():
        print(f"{name:28} {rounded(value)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0
