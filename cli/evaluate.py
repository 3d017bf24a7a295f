"""``ecosnap evaluate DATASET.zip|URL``: run an evaluation through the API and report it
(through ``common.client``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from common.client import APIError, Client

POLL_S = 0.5
BAR_WIDTH = 30


def _bar(progress: dict | None) -> str:
    if not progress:
        return "queued…"
    filled = int(BAR_WIDTH * progress["percent"] / 100)
    eta = "" if progress["eta_s"] is None else f", {progress['eta_s']:.0f} s left"
    return (f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {progress['percent']:5.1f}% "
            f"{progress['done']}/{progress['total']} images, "
            f"{progress['images_per_s']:.0f} img/s{eta}")  # fmt: skip


def _table(result: dict) -> str:
    rows = [f"{'':12} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}"]
    for label, scores in result["per_class"].items():
        rows.append(f"{label:12} {scores['precision']:9.1f} {scores['recall']:9.1f} "
                    f"{scores['f1_score']:9.1f} {scores['support']:8d}")  # fmt: skip
    for name, scores in (("macro", result), ("weighted", result["weighted"])):
        rows.append(f"{name:12} {scores['precision']:9.1f} {scores['recall']:9.1f} "
                    f"{scores['f1_score']:9.1f} {result['images']:8d}")  # fmt: skip
    rows.append(f"\naccuracy {result['accuracy']:.1f}% on {result['images']} images "
                f"(split: {result['split'] or 'all'}, model {result['model_version']}, "
                f"{result['duration_s']:.1f} s)")  # fmt: skip
    if result["skipped"]:
        rows.append("skipped: " + ", ".join(f"{k} {v}" for k, v in result["skipped"].items()))
    if result["unmatched_folders"]:
        rows.append("folders matching no class: " + ", ".join(result["unmatched_folders"]))
    return "\n".join(rows)


def evaluate(
    dataset: str, api: str, split: str | None, output: Path | None, api_key: str | None = None
) -> int:
    client = Client(api, api_key)
    source = dataset if dataset.startswith(("gs://", "https://")) else Path(dataset)
    try:
        job_id = client.evaluate(source, split)["job_id"]
    except APIError as exc:
        raise SystemExit(f"The API refused the dataset: {exc.message}") from exc
    try:
        while True:
            job = client.job(job_id)
            print(f"\r{_bar(job.get('progress'))}", end="", file=sys.stderr, flush=True)
            if job["status"] in {"succeeded", "failed", "cancelled"}:
                break
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        client.request("DELETE", f"/jobs/{job_id}")
        print("\nCancelled.", file=sys.stderr)
        return 130
    print(file=sys.stderr)
    if job["status"] != "succeeded":
        print(f"Evaluation {job['status']}: {job.get('error', {}).get('message', '')}")
        return 1
    print(_table(job["result"]))
    output = output or Path(f"confusion-{job_id[:8]}.png")
    output.write_bytes(client.confusion_png(job_id))
    print(f"confusion matrix: {output}")
    return 0
