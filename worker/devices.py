"""Which device a worker computes on: ``DEVICE`` = ``auto``, ``cpu``, ``cuda:N``, or
``simulated:BATCH_MS:IMAGE_MS``.

- ``auto`` takes the first GPU when ONNX Runtime's CUDA execution provider is
  installed (``pip install .[gpu]``, the GPU image) and a GPU is visible, else the
  CPU, and says why in the worker's log and heartbeat.
- ``cuda:N`` insists on GPU ``N``: a worker that cannot have it stops at start rather
  than serve slowly on the CPU. One worker process per GPU (``ecosnap up --workers``
  gives each its own ``CUDA_VISIBLE_DEVICES``).
- ``simulated:BATCH_MS:IMAGE_MS`` stands in for an accelerator in the scaling
  benchmark: the model call sleeps a fixed time per batch plus a small time per
  image, as a CPU waits on a GPU, so what the queue, broker and API cost shows.

ONNX Runtime gets TensorRT first when present, then CUDA, then the CPU; TensorFlow
(Keras models served without ONNX) sees only the worker's GPU and grows its memory
as needed; LiteRT runs on the CPU. A GPU worker batches more
(``GPU_BATCH_MAX_SIZE``, ``GPU_BATCH_MAX_WAIT_MS``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from common.errors import Refusal

SIMULATED = re.compile(r"^simulated:(\d+(?:\.\d+)?):(\d+(?:\.\d+)?)$")
CUDA = re.compile(r"^cuda:(\d+)$")


class DeviceUnavailable(Refusal):
    def __init__(self, message: str) -> None:
        super().__init__("device_unavailable", message)


@dataclass(frozen=True)
class Device:
    """A resolved device: ``kind`` is ``cpu``, ``cuda`` or ``simulated``."""

    kind: str
    index: int = 0
    batch_ms: float = 0.0
    image_ms: float = 0.0
    # Why this device, for the log and the heartbeat.
    reason: str = ""

    @property
    def is_gpu(self) -> bool:
        return self.kind in ("cuda", "simulated")

    def __str__(self) -> str:
        if self.kind == "cuda":
            return f"cuda:{self.index}"
        if self.kind == "simulated":
            return f"simulated:{self.batch_ms:g}:{self.image_ms:g}"
        return "cpu"

    def onnx_providers(self) -> list:
        if self.kind != "cuda":
            return ["CPUExecutionProvider"]
        chosen = [
            (provider, {"device_id": self.index})
            for provider in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
            if provider in onnx_providers_installed()
        ]
        return [*chosen, "CPUExecutionProvider"]


def onnx_providers_installed() -> list[str]:
    import onnxruntime

    return onnxruntime.get_available_providers()


def visible_gpus() -> int:
    """GPUs this process may use: ``nvidia-smi``'s list, within ``CUDA_VISIBLE_DEVICES``."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return 0
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    count = sum(1 for line in listed.stdout.splitlines() if line.startswith("GPU "))
    restricted = os.environ.get("CUDA_VISIBLE_DEVICES")
    return min(count, len(restricted.split(","))) if restricted else count


def resolve(setting: str) -> Device:
    """The device ``setting`` names, checked against what this machine has."""
    if setting == "cpu":
        return Device("cpu", reason="DEVICE=cpu")
    if match := SIMULATED.match(setting):
        batch_ms, image_ms = (float(group) for group in match.groups())
        return Device("simulated", batch_ms=batch_ms, image_ms=image_ms,
                      reason="a simulated accelerator (benchmark)")  # fmt: skip
    cuda_installed = "CUDAExecutionProvider" in onnx_providers_installed()
    gpus = visible_gpus()
    if match := CUDA.match(setting):
        index = int(match.group(1))
        if not cuda_installed:
            raise DeviceUnavailable(
                f"DEVICE={setting}, but ONNX Runtime has no CUDA execution provider here "
                "(install the GPU extra: pip install '.[gpu]')."
            )
        if index >= gpus:
            raise DeviceUnavailable(f"DEVICE={setting}, but {gpus} GPUs are visible.")
        return Device("cuda", index, reason=f"DEVICE={setting}")
    if setting != "auto":
        raise DeviceUnavailable(
            f"DEVICE is auto, cpu, cuda:N or simulated:BATCH_MS:IMAGE_MS, not {setting!r}."
        )
    if cuda_installed and gpus:
        return Device("cuda", 0, reason=f"auto: {gpus} GPUs visible, CUDA provider installed")
    why = "no GPU is visible" if cuda_installed else "ONNX Runtime has no CUDA provider here"
    return Device("cpu", reason=f"auto: {why}")


def prepare_tensorflow(device: Device) -> None:
    """TensorFlow on the worker's GPU, its memory grown as needed rather than all taken
    at once; on the CPU, no GPU at all. Called before a Keras model loads."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    chosen = gpus[device.index : device.index + 1] if device.kind == "cuda" else []
    try:
        tf.config.set_visible_devices(chosen, "GPU")
        for gpu in chosen:
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:  # TensorFlow set up its devices already in this process
        return
