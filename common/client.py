"""A small Python client of the EcoSnap API: what ``ecosnap predict``, ``ecosnap
evaluate``, the benchmark and the tests share.

It speaks the API's JSON contract (``/openapi.json``), sends the API key when one is
given, and honours ``Retry-After``: a 503 (overloaded, Redis or the bucket down) or a
429 (a rate limit) is tried again after the time the service asks for, a bounded
number of times, before the error is raised; so is a request whose connection was
closed under it (a photo sent twice is only classified twice).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

RETRIED_STATUSES = (429, 503)


class APIError(Exception):
    """The service refused a request: its HTTP status and ``{"code", "message"}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


@dataclass
class Client:
    """The API at ``base_url``; ``api_key`` when the service has keys on."""

    base_url: str
    api_key: str | None = None
    timeout_s: float = 120.0
    # How often a 503 or 429 is tried again, and the longest wait honoured each time.
    retries: int = 5
    max_retry_after_s: float = 60.0
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        if self.api_key:
            self.session.headers["Authorization"] = f"Bearer {self.api_key}"

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A request, tried again on 503 and 429 after ``Retry-After``; a 4xx or 5xx
        left after that raises ``APIError``."""
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self.session.request(method, self.base_url + path,
                                                timeout=self.timeout_s, **kwargs)  # fmt: skip
            except requests.ConnectionError:
                # Most often a kept-alive connection the server closed while we waited
                # out a Retry-After: the request never reached it.
                if last:
                    raise
                wait_s = 0.5
            else:
                if response.status_code not in RETRIED_STATUSES or last:
                    break
                wait_s = float(response.headers.get("Retry-After", "1"))
            time.sleep(min(max(wait_s, 0.0), self.max_retry_after_s))
            for part in (kwargs.get("files") or {}).values():  # a file read by the last try
                if hasattr(part[1], "seek"):
                    part[1].seek(0)
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = {"code": "http_error", "message": response.text[:200]}
            raise APIError(response.status_code, error["code"], error["message"])
        return response

    def predict(self, photo: Path | bytes, wait_s: float = 30, lang: str = "id") -> dict:
        """Classify a photo (a path or its bytes): the result, or the job (202) when the
        wait runs out; with ``wait_s`` 0 the job at once."""
        data = photo.read_bytes() if isinstance(photo, Path) else photo
        name = photo.name if isinstance(photo, Path) else "photo.jpg"
        return self.request("POST", f"/predict?wait={wait_s:g}&lang={lang}",
                            files={"file": (name, data)}).json()  # fmt: skip

    def predict_url(self, url: str, wait_s: float = 30, lang: str = "id") -> dict:
        """Classify an object of the service's bucket, named by ``gs://`` or https URL."""
        return self.request("POST", f"/predict?wait={wait_s:g}&lang={lang}",
                            json={"url": url}).json()  # fmt: skip

    def evaluate(self, dataset: Path | bytes | str, split: str | None = None) -> dict:
        """Start evaluating a local zip (a path or its bytes), or a bucket URL: the job (202)."""
        fields = {"split": split} if split else {}
        if isinstance(dataset, str):
            return self.request("POST", "/evaluate", json={"dataset_url": dataset, **fields}).json()
        if isinstance(dataset, bytes):
            return self.request("POST", "/evaluate", files={"file": ("dataset.zip", dataset)},
                                data=fields).json()  # fmt: skip
        with dataset.open("rb") as stream:
            return self.request("POST", "/evaluate", files={"file": (dataset.name, stream)},
                                data=fields).json()  # fmt: skip

    def job(self, job_id: str) -> dict:
        return self.request("GET", f"/jobs/{job_id}").json()

    def wait_for(self, job_id: str, timeout_s: float = 3600, poll_s: float = 0.5) -> dict:
        """The job once it has finished (succeeded, failed or cancelled)."""
        deadline = time.monotonic() + timeout_s
        while True:
            record = self.job(job_id)
            if record["status"] in ("succeeded", "failed", "cancelled"):
                return record
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {record['status']}")
            time.sleep(poll_s)

    def confusion_png(self, job_id: str) -> bytes:
        return self.request("GET", f"/jobs/{job_id}/confusion.png").content

    def model_info(self) -> dict:
        return self.request("GET", "/model-info").json()
