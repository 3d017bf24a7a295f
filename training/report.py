"""The small report written beside a trained model: curves, confusion matrix, numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.reports import confusion_png, figure_png, pyplot


def curves_png(history: dict[str, list[float]]) -> bytes:
    """Loss and accuracy per epoch, training against validation."""
    figure, axes = pyplot().subplots(1, 2, figsize=(10, 4), dpi=100)
    epochs = range(1, len(history["loss"]) + 1)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, history[metric], label="training")
        ax.plot(epochs, history[f"val_{metric}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    return figure_png(figure)


def write_report(
    folder: Path,
    history: dict[str, list[float]],
    test_metrics: dict[str, Any],
    details: dict[str, Any],
) -> None:
    """``curves.png``, ``confusion.png`` (test split) and ``report.json`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "curves.png").write_bytes(curves_png(history))
    (folder / "confusion.png").write_bytes(
        confusion_png(test_metrics["confusion_matrix"]["matrix"])
    )
    report = {
        **details,
        "history": {key: [round(float(v), 5) for v in values] for key, values in history.items()},
        "test_metrics": test_metrics,
    }
    (folder / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
