"""``ecosnap predict PATH...``: classify photos through the API, many at once.

PATHs are photo files, folders (searched recursively for ``.jpg``, ``.jpeg``, ``.png``
and ``.webp``) or bucket URLs (``gs://`` or ``https://storage.googleapis.com/``).
Photos go ``--concurrency`` at a time through ``common.client`` (which honours
``Retry-After`` on 503 and 429), with a progress bar on a terminal. The answers are a
table on a terminal, or CSV or JSON lines with ``--output FILE.csv`` / ``FILE.jsonl``
(``-`` for standard output, JSON lines).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, TextIO

from common.client import APIError, Client

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
COLUMNS = ("source", "label", "confidence", "model_version", "job_id", "error")
BAR_WIDTH = 30


def sources(paths: list[str]) -> Iterator[str]:
    """Every photo the arguments name, folders expanded, in a stable order."""
    for path in paths:
        if path.startswith(("gs://", "https://")):
            yield path
        elif Path(path).is_dir():
            yield from sorted(str(p) for p in Path(path).rglob("*")
                              if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)  # fmt: skip
        else:
            yield path


def classify(client: Client, source: str, lang: str) -> dict[str, Any]:
    """One photo's row: its label and confidence, or why it has none."""
    try:
        if source.startswith(("gs://", "https://")):
            answer = client.predict_url(source, lang=lang)
        else:
            answer = client.predict(Path(source), lang=lang)
    except APIError as exc:
        return {"source": source, "error": f"{exc.code}: {exc.message}"}
    except OSError as exc:
        return {"source": source, "error": f"unreadable: {exc.strerror or exc}"}
    if "label" not in answer:  # 202: still queued when the wait ran out
        return {"source": source, "job_id": answer["job_id"], "error": "still queued"}
    return {key: answer.get(key) for key in COLUMNS} | {"source": source}


def predict(
    paths: list[str], api: str, api_key: str | None, concurrency: int, output: str | None,
    lang: str,
) -> int:  # fmt: skip
    client = Client(api, api_key)
    todo = list(sources(paths))
    rows: list[dict[str, Any]] = []
    progress = sys.stderr.isatty()
    with ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(classify, client, source, lang) for source in todo]
        for future in as_completed(futures):
            rows.append(future.result())
            if progress:
                _draw_bar(len(rows), len(todo))
    if progress:
        print(file=sys.stderr)
    order = {source: index for index, source in enumerate(todo)}
    rows.sort(key=lambda row: order[row["source"]])
    _write(rows, output)
    return 0 if all(not row.get("error") for row in rows) else 1


def _draw_bar(done: int, total: int) -> None:
    filled = int(BAR_WIDTH * done / max(total, 1))
    print(f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total} photos",
          end="", file=sys.stderr, flush=True)  # fmt: skip


def _write(rows: list[dict[str, Any]], output: str | None) -> None:
    if output is None:
        print(table(rows) if sys.stdout.isatty() else json_lines(rows), end="")
    elif output == "-":
        print(json_lines(rows), end="")
    else:
        text = csv_text(rows) if output.endswith(".csv") else json_lines(rows)
        Path(output).write_text(text)


def table(rows: list[dict[str, Any]]) -> str:
    shown = [[str(row.get(column) or "") for column in COLUMNS[:4]] + [row.get("error") or ""]
             for row in rows]  # fmt: skip
    header = [*COLUMNS[:4], "error"]
    widths = [max(len(cell) for cell in column) for column in zip(header, *shown, strict=True)]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        + "\n"
        for line in (header, *shown)
    )


def json_lines(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def csv_text(rows: list[dict[str, Any]]) -> str:
    buffer: TextIO = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS)
    writer.writeheader()
    writer.writerows({column: row.get(column, "") for column in COLUMNS} for row in rows)
    return buffer.getvalue()
