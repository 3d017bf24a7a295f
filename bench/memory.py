"""What images that are small on the wire and huge decoded cost the stack's memory.

A real stack as ``ecosnap up`` runs it (private Redis, a predict worker, gunicorn
with 2 processes) gets eight requests at once of each kind:

- the worst case, a 49-megapixel 16-bit RGBA PNG (381 KB sent, 374 MB decoded):
  refused by the API from its header (413), before any pixel is decoded;
- the largest PNG accepted (RGBA, just under ``MAX_DECODED_MB``): decoded by the
  worker, whose decoding threads share ``DECODE_BUDGET_MB``, so eight at once cost
  it about one budget, not eight images.

It reports each API process's and the worker's peak memory (VmHWM) and growth, and
how long the requests took. Run it with ``python -m bench --memory-only`` (it is also
part of the whole benchmark).
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from bench.images import flat_png
from bench.procfs import children, memory_mb
from common.processes import (
    API_PROCESSES,
    free_port,
    http_ok,
    start_api,
    start_predict_worker,
    start_redis,
    stop,
    wait_until,
)
from common.settings import Settings

CONCURRENT = 8
WORST_CASE = (7000, 7000)  # 49 MP, 16-bit RGBA


class PeakSampler:
    """The highest resident memory each process reaches while the sampler runs."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.before = {name: memory_mb(pid) for name, pid in pids.items()}
        self.peak = dict(self.before)
        self._pids = pids
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            for name, pid in self._pids.items():
                self.peak[name] = max(self.peak[name], memory_mb(pid))

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {name: round(self.peak[name] - self.before[name], 1) for name in self._pids}


def largest_accepted_png(settings: Settings) -> tuple[bytes, tuple[int, int]]:
    """An 8-bit RGBA PNG just within ``MAX_DECODED_MB``."""
    side = math.isqrt(settings.max_decoded_bytes // 4)
    return flat_png(side, side, bit_depth=8, colour_type=6), (side, side)


def burst(base: str, data: bytes, pids: dict[str, int]) -> dict[str, Any]:
    sampler = PeakSampler(pids)
    started = time.monotonic()

    def send(_: int) -> requests.Response:
        return requests.post(f"{base}/predict?wait=30", files={"file": ("p.png", data)},
                             timeout=120)  # fmt: skip

    with ThreadPoolExecutor(CONCURRENT) as pool:
        answers = list(pool.map(send, range(CONCURRENT)))
    seconds = time.monotonic() - started
    growth = sampler.stop()
    return {
        "statuses": sorted({answer.status_code for answer in answers}),
        "error_codes": sorted({(a.json().get("error") or {}).get("code", "") for a in answers}),
        "seconds": round(seconds, 2),
        "rss_growth_mb": growth,
        "peak_rss_mb": {name: round(sampler.peak[name], 1) for name in pids},
    }


def memory_bound(settings: Settings) -> dict[str, Any]:
    worst = flat_png(*WORST_CASE)
    accepted, accepted_size = largest_accepted_png(settings)
    with tempfile.TemporaryDirectory() as var_dir:
        redis_process, redis_url = start_redis(Path(var_dir) / "redis")
        env = {"REDIS_URL": redis_url, "ECOSNAP_VAR_DIR": var_dir, "RATE_LIMIT_PHOTOS": ""}
        port = free_port()
        worker = start_predict_worker(env, Path(var_dir))
        api = start_api(env, port, log_path=Path(var_dir) / "api.log")
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until(
                lambda: http_ok(f"{base}/health") and len(children(api.pid)) == API_PROCESSES,
                180,
                "memory bench stack",
                worker,
            )
            pids = {f"api_{n}": pid for n, pid in enumerate(children(api.pid))}
            pids["predict_worker"] = worker.pid
            return {
                "worst_case_png": {
                    "pixels": f"{WORST_CASE[0]}x{WORST_CASE[1]} RGBA 16-bit",
                    "bytes_sent": len(worst),
                    **burst(base, worst, pids),
                },
                "largest_accepted_png": {
                    "pixels": f"{accepted_size[0]}x{accepted_size[1]} RGBA 8-bit",
                    "bytes_sent": len(accepted),
                    **burst(base, accepted, pids),
                },
                "max_decoded_mb": settings.max_decoded_mb,
                "decode_budget_mb": settings.decode_budget_mb,
            }
        finally:
            for process in (api, worker, redis_process):
                stop(process)
