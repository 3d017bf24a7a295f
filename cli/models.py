"""``ecosnap models add FILE``: a model trained elsewhere, made ready to serve.

It reads the model's input and outputs off the file (``worker/inspection.py``) and
writes its metadata beside it, asking only for what the file cannot say: the
preprocessing preset it was trained with and, when not the service's own, its class
order. With ``--upload URL`` it sends both to a running service (``POST /models``,
with ``ADMIN_API_KEY``), waits for a worker to validate the model, and with
``--activate`` makes it the active version.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import requests

from common.model_metadata import ModelMetadata, metadata_path_for

VALIDATION_TIMEOUT_S = 600
POLL_S = 0.5


def add(
    path: Path,
    preset: str,
    version: str | None,
    description: str | None,
    classes: tuple[str, ...],
    upload: str | None,
    activate: bool,
    admin_key: str | None,
) -> int:
    from common.model_metadata import check_classes, check_version_name, file_sha256
    from worker.inspection import describe_model

    check_classes(classes)
    version = version or f"{path.stem}-{file_sha256(path)[:8]}"
    check_version_name(version)
    metadata = describe_model(
        path, version, description or f"{path.name}, added with preset {preset}.", preset,
        classes,
    )  # fmt: skip
    written = metadata.write_for(path)
    width, height = metadata.input_size
    print(f"Wrote {written}: version {version}, input {width}x{height}, "
          f"outputs {metadata.outputs}, batching {metadata.extra['imported']['batching']}, "
          f"preset {preset}")  # fmt: skip
    if upload is None:
        return 0
    if not admin_key:
        raise SystemExit("--upload needs the service's admin key in ADMIN_API_KEY.")
    api, headers = upload.rstrip("/"), {"Authorization": f"Bearer {admin_key}"}
    _upload(api, headers, path, metadata)
    if activate:
        answer = requests.put(f"{api}/models/active", json={"version": version},
                              headers=headers, timeout=60)  # fmt: skip
        _check(answer, "activating it")
        print(f"Active: {version} (was {answer.json()['previous']})")
    return 0


def _upload(api: str, headers: dict[str, str], path: Path, metadata: ModelMetadata) -> None:
    with path.open("rb") as model:
        answer = requests.post(
            f"{api}/models",
            files={"model": (path.name, model),
                   "metadata": (metadata_path_for(path).name, json.dumps(metadata.to_fields()))},
            headers=headers, timeout=600,
        )  # fmt: skip
    _check(answer, "uploading it")
    print(f"Uploaded; validating ({answer.json()['status_url']})")
    deadline = time.monotonic() + VALIDATION_TIMEOUT_S
    while time.monotonic() < deadline:
        job = requests.get(answer.json()["status_url"], headers=headers, timeout=30).json()
        if job["status"] == "succeeded":
            print(f"Valid: {metadata.version}")
            return
        if job["status"] == "failed":
            raise SystemExit(f"The service found the model invalid: {job['error']['message']}")
        time.sleep(POLL_S)
    raise SystemExit(f"No worker validated the model within {VALIDATION_TIMEOUT_S} s.")


def _check(answer: requests.Response, doing: str) -> None:
    if answer.status_code >= 400:
        raise SystemExit(f"The service refused {doing}: {answer.json()['error']['message']}")
