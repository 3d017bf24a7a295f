"""Runtime settings, read once from environment variables.

Every process (API, worker, CLI) builds its configuration from this one module so a
setting has a single name and a single default. It imports nothing of the project:
every other module may depend on it, and it on none of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_PATH = PROJECT_ROOT / "models" / "default.h5"
DEFAULT_VAR_DIR = PROJECT_ROOT / "var"
# Threads of each API process that ``?wait`` requests may never all hold.
API_RESERVED_THREADS = 4


def _bytes(megabytes: float) -> int:
    return int(megabytes * 1024 * 1024)


@dataclass(frozen=True)
class Settings:
    """What a deployment can change; the defaults run everything on one machine."""

    redis_url: str | None = None
    # How the private Redis of `ecosnap up` syncs its append-only file (see README).
    redis_appendfsync: str = "always"
    # The private Redis's memory bound (it refuses writes past it, never evicts).
    redis_maxmemory_mb: int = 1024
    model_path: Path = DEFAULT_MODEL_PATH
    var_dir: Path = DEFAULT_VAR_DIR
    gcs_bucket: str | None = None
    storage_timeout_s: float = 5.0
    max_upload_mb: float = 10.0
    max_image_megapixels: float = 50.0
    # The most memory one image may take once decoded (pixels x bands x bytes).
    max_decoded_mb: float = 100.0
    # How much memory a worker's decoding threads may hold at once.
    decode_budget_mb: float = 300.0
    result_ttl_s: int = 24 * 3600
    upload_retention_s: int = 24 * 3600  # from_env: RESULT_TTL_S unless set
    batch_max_size: int = 32
    batch_max_wait_ms: float = 10.0
    heartbeat_interval_s: float = 2.0
    broker_lease_s: float = 10.0
    redeliver_after_s: float = 15.0
    api_threads: int = 64
    accelerate: str = "onnx"
    # auto | cpu | cuda:N | simulated:BATCH_MS:IMAGE_MS (worker/devices.py)
    device: str = "auto"
    # A GPU worker's batches: larger, and worth a slightly longer wait.
    gpu_batch_max_size: int = 128
    gpu_batch_max_wait_ms: float = 20.0
    # Where a worker serves its Prometheus metrics; 0: not at all.
    worker_metrics_port: int = 0
    max_dataset_mb: float = 1024.0
    max_dataset_uncompressed_mb: float = 4096.0
    max_dataset_members: int = 100_000
    max_compression_ratio: float = 100.0
    eval_chunk_size: int = 128
    registry_root: Path | None = None
    model_name: str = "waste-classifier"
    admin_api_key: str | None = None
    # Named API keys (``name=key`` pairs, comma-separated) or a file of them; unset:
    # no keys needed (local use).
    api_keys: str | None = None
    api_keys_file: Path | None = None
    # Per key, or per client address without keys; "" turns a limit off.
    rate_limit_photos: str = "100 per second"
    rate_limit_datasets: str = "20 per hour"
    # Photos queued at most: 0 sizes it from what the live workers answer in
    # QUEUE_BACKLOG_S seconds.
    max_queued_photos: int = 0
    queue_backlog_s: float = 5.0
    # Evaluations running or queued at once.
    max_evaluations: int = 2
    # Where clients reach the API: stored photo URLs are built from it, never from the
    # request's Host header. Unset: http://127.0.0.1:PORT.
    public_base_url: str | None = None
    port: int = 8080
    max_model_mb: float = 200.0

    def __post_init__(self) -> None:
        if self.redis_appendfsync not in ("always", "everysec"):
            raise ValueError("REDIS_APPENDFSYNC is always or everysec.")
        if self.upload_retention_s < 0:
            raise ValueError("UPLOAD_RETENTION_S is 0 (keep uploads) or a number of seconds.")
        if self.api_threads <= API_RESERVED_THREADS:
            raise ValueError(f"API_THREADS must be more than {API_RESERVED_THREADS}.")
        if self.broker_lease_s < 3:
            raise ValueError("BROKER_LEASE_S is at least 3 seconds (renewed every third).")
        if self.decode_budget_mb < self.max_decoded_mb:
            raise ValueError("DECODE_BUDGET_MB must hold at least one MAX_DECODED_MB image.")
        if self.max_evaluations < 1:
            raise ValueError("MAX_EVALUATIONS is at least 1.")
        if self.redeliver_after_s <= 0:
            raise ValueError("REDELIVER_AFTER_S is a number of seconds.")

    @property
    def api_waiting_slots(self) -> int:
        """How many ``?wait`` requests one API process holds at once: all its threads
        but a few, so health checks and quick requests always find a free thread."""
        return self.api_threads - API_RESERVED_THREADS

    @property
    def base_url(self) -> str:
        """The address clients reach the API at, without a trailing slash."""
        return (self.public_base_url or f"http://127.0.0.1:{self.port}").rstrip("/")

    @property
    def max_decoded_bytes(self) -> int:
        return _bytes(self.max_decoded_mb)

    @property
    def decode_budget_bytes(self) -> int:
        return _bytes(self.decode_budget_mb)

    @property
    def registry_dir(self) -> Path:
        """Where model versions live; by default inside the var folder."""
        return self.registry_root or self.var_dir / "registry"

    @property
    def max_model_bytes(self) -> int:
        return _bytes(self.max_model_mb)

    @property
    def sweep_interval_s(self) -> float:
        """How often a worker removes expired uploads: a tenth of the retention (at
        least a second, at most an hour), so a file outlives it by little."""
        return min(3600.0, max(1.0, self.upload_retention_s / 10))

    @property
    def upload_dir(self) -> Path:
        return self.var_dir / "uploads"

    @property
    def max_upload_bytes(self) -> int:
        return _bytes(self.max_upload_mb)

    @property
    def max_dataset_bytes(self) -> int:
        return _bytes(self.max_dataset_mb)

    @property
    def max_image_pixels(self) -> int:
        return int(self.max_image_megapixels * 1_000_000)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        defaults = cls()
        result_ttl_s = int(env.get("RESULT_TTL_S", defaults.result_ttl_s))
        return cls(
            redis_url=env.get("REDIS_URL") or None,
            redis_appendfsync=env.get("REDIS_APPENDFSYNC", defaults.redis_appendfsync),
            redis_maxmemory_mb=int(env.get("REDIS_MAXMEMORY_MB", defaults.redis_maxmemory_mb)),
            model_path=Path(env.get("MODEL_PATH", defaults.model_path)),
            var_dir=Path(env.get("ECOSNAP_VAR_DIR", defaults.var_dir)),
            gcs_bucket=env.get("GCS_BUCKET") or None,
            storage_timeout_s=float(env.get("STORAGE_TIMEOUT_S", defaults.storage_timeout_s)),
            max_upload_mb=float(env.get("MAX_UPLOAD_MB", defaults.max_upload_mb)),
            max_image_megapixels=float(
                env.get("MAX_IMAGE_MEGAPIXELS", defaults.max_image_megapixels)
            ),
            max_decoded_mb=float(env.get("MAX_DECODED_MB", defaults.max_decoded_mb)),
            decode_budget_mb=float(env.get("DECODE_BUDGET_MB", defaults.decode_budget_mb)),
            result_ttl_s=result_ttl_s,
            # Uploads live as long as the job records that link to them, unless told.
            upload_retention_s=int(env.get("UPLOAD_RETENTION_S", result_ttl_s)),
            batch_max_size=int(env.get("BATCH_MAX_SIZE", defaults.batch_max_size)),
            batch_max_wait_ms=float(env.get("BATCH_MAX_WAIT_MS", defaults.batch_max_wait_ms)),
            heartbeat_interval_s=float(
                env.get("HEARTBEAT_INTERVAL_S", defaults.heartbeat_interval_s)
            ),
            broker_lease_s=float(env.get("BROKER_LEASE_S", defaults.broker_lease_s)),
            redeliver_after_s=float(env.get("REDELIVER_AFTER_S", defaults.redeliver_after_s)),
            api_threads=int(env.get("API_THREADS", defaults.api_threads)),
            accelerate=env.get("ACCELERATE", defaults.accelerate),
            device=env.get("DEVICE", defaults.device),
            worker_metrics_port=int(env.get("WORKER_METRICS_PORT", defaults.worker_metrics_port)),
            gpu_batch_max_size=int(env.get("GPU_BATCH_MAX_SIZE", defaults.gpu_batch_max_size)),
            gpu_batch_max_wait_ms=float(
                env.get("GPU_BATCH_MAX_WAIT_MS", defaults.gpu_batch_max_wait_ms)
            ),
            max_dataset_mb=float(env.get("MAX_DATASET_MB", defaults.max_dataset_mb)),
            max_dataset_uncompressed_mb=float(
                env.get("MAX_DATASET_UNCOMPRESSED_MB", defaults.max_dataset_uncompressed_mb)
            ),
            max_dataset_members=int(env.get("MAX_DATASET_MEMBERS", defaults.max_dataset_members)),
            max_compression_ratio=float(
                env.get("MAX_COMPRESSION_RATIO", defaults.max_compression_ratio)
            ),
            eval_chunk_size=int(env.get("EVAL_CHUNK_SIZE", defaults.eval_chunk_size)),
            registry_root=Path(env["MODEL_REGISTRY"]) if env.get("MODEL_REGISTRY") else None,
            model_name=env.get("MODEL_NAME", defaults.model_name),
            admin_api_key=env.get("ADMIN_API_KEY") or None,
            api_keys=env.get("API_KEYS") or None,
            api_keys_file=Path(env["API_KEYS_FILE"]) if env.get("API_KEYS_FILE") else None,
            rate_limit_photos=env.get("RATE_LIMIT_PHOTOS", defaults.rate_limit_photos),
            rate_limit_datasets=env.get("RATE_LIMIT_DATASETS", defaults.rate_limit_datasets),
            max_queued_photos=int(env.get("MAX_QUEUED_PHOTOS", defaults.max_queued_photos)),
            queue_backlog_s=float(env.get("QUEUE_BACKLOG_S", defaults.queue_backlog_s)),
            max_evaluations=int(env.get("MAX_EVALUATIONS", defaults.max_evaluations)),
            public_base_url=env.get("PUBLIC_BASE_URL") or None,
            port=int(env.get("PORT", defaults.port)),
            max_model_mb=float(env.get("MAX_MODEL_MB", defaults.max_model_mb)),
        )
