"""The load generator: keep-alive HTTP clients posting pre-encoded multipart photos."""

from __future__ import annotations

import http.client
import threading
import time
from concurrent.futures import ThreadPoolExecutor

PREDICT_PATH = "/predict?wait=30"


def multipart(data: bytes) -> tuple[bytes, str]:
    """A ready-made ``multipart/form-data`` body, so the load generator stays cheap."""
    boundary = "ecosnapbench"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


class Clients:
    """Concurrent clients, each thread keeping one connection, so the benchmark's own
    CPU use, on the same cores as the service, stays small."""

    def __init__(
        self, port: int, photos: list[bytes], concurrency: int, path: str = PREDICT_PATH
    ) -> None:
        self.port = port
        self.path = path
        self.bodies = [multipart(data) for data in photos]
        self.concurrency = concurrency
        self._pool = ThreadPoolExecutor(concurrency)
        self._local = threading.local()

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pool.shutdown()

    def post(self, index: int) -> float:
        """Send photo ``index`` and wait for its answer; returns milliseconds."""
        if not hasattr(self._local, "connection"):
            self._local.connection = http.client.HTTPConnection("127.0.0.1", self.port, 60)
        body, content_type = self.bodies[index % len(self.bodies)]
        start = time.perf_counter()
        self._local.connection.request("POST", self.path, body, {"Content-Type": content_type})
        response = self._local.connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"{response.status}: {payload[:200]!r}")
        return (time.perf_counter() - start) * 1000

    def run(self, requests: int) -> list[float]:
        """``requests`` posts spread over the clients; their latencies in milliseconds."""
        return list(self._pool.map(self.post, range(requests)))
