"""Classification metrics and pictures, shared by evaluation jobs and training reports.

scikit-learn computes the numbers and matplotlib draws them; neither is imported by
the API, which only serves what these functions produced.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from common.labels import CLASSES


def percent(fraction: float) -> float:
    return round(float(fraction) * 100, 1)


def metrics(y_true: list[int], y_pred: list[int]) -> dict[str, Any]:
    """The seed's numbers (percent, macro averages) plus weighted, per class and the matrix."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    labels = list(range(len(CLASSES)))

    def averaged(average: str) -> dict[str, float]:
        precision, recall, f1, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0
        )
        return {
            "precision": percent(precision),
            "recall": percent(recall),
            "f1_score": percent(f1),
        }

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    return {
        "accuracy": percent(accuracy_score(y_true, y_pred)),
        **averaged("macro"),
        "average": "macro",
        "weighted": averaged("weighted"),
        "per_class": {
            CLASSES[i]: {
                "precision": percent(precision[i]),
                "recall": percent(recall[i]),
                "f1_score": percent(f1[i]),
                "support": int(support[i]),
            }
            for i in labels
        },
        "confusion_matrix": {
            "labels": list(CLASSES),
            "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        },
    }


def pyplot():
    """matplotlib's pyplot on the Agg backend: workers and training have no screen."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def figure_png(figure) -> bytes:
    """The figure as PNG bytes; closes it, so long-lived workers do not accumulate figures."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    pyplot().close(figure)
    return buffer.getvalue()


def confusion_png(matrix: list[list[int]]) -> bytes:
    from sklearn.metrics import ConfusionMatrixDisplay

    figure, axes = pyplot().subplots(figsize=(6.5, 5.5), dpi=100)
    ConfusionMatrixDisplay(np.array(matrix), display_labels=list(CLASSES)).plot(
        ax=axes, cmap="Greens", colorbar=False
    )
    axes.set_title("Confusion matrix (rows: true, columns: predicted)")
    return figure_png(figure)
