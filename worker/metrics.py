"""What each worker tells Prometheus, on its own port (``WORKER_METRICS_PORT``; 0: off).

Batches (their size, the seconds spent preparing images and in the model), the labels
answered and the confidence of each answer (to see drift), evaluation images, jobs
finished by kind and outcome, and the model version and device this worker serves.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

BATCH_SIZE = Histogram("ecosnap_batch_size", "Photos per batch",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))  # fmt: skip
PREPARE_SECONDS = Histogram("ecosnap_preprocess_seconds", "Reading and preprocessing a batch")
INFERENCE_SECONDS = Histogram("ecosnap_inference_seconds", "The model's calls for a batch")
PREDICTIONS = Counter("ecosnap_predictions_total", "Photos answered, by label", ["label"])
CONFIDENCE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
CONFIDENCE = Histogram("ecosnap_confidence", "The largest probability of each answer",
                       buckets=CONFIDENCE_BUCKETS)  # fmt: skip
JOBS_FINISHED = Counter("ecosnap_jobs_finished_total", "Jobs finished", ["kind", "status"])
EVALUATION_IMAGES = Counter("ecosnap_evaluation_images_total", "Dataset images classified")
MODEL = Gauge("ecosnap_model_info", "The model version this worker serves (1)",
              ["version", "runtime", "device", "batching"])  # fmt: skip


def serve(port: int) -> None:
    """Expose this process's metrics on ``port``."""
    if port:
        start_http_server(port)


def serving(version: str, runtime: str, device: str, batching: str) -> None:
    """Say which model this worker serves now (the one before drops out)."""
    MODEL.clear()
    MODEL.labels(version, runtime, device, batching).set(1)
