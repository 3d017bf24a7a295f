"""``DEVICE``: which device a worker computes on, checked against what the machine has."""

import pytest

from worker import devices
from worker.devices import Device, DeviceUnavailable, resolve


@pytest.fixture
def machine(monkeypatch):
    """A machine with ``providers`` installed and ``gpus`` visible."""

    def have(providers: list[str], gpus: int) -> None:
        monkeypatch.setattr(devices, "onnx_providers_installed", lambda: providers)
        monkeypatch.setattr(devices, "visible_gpus", lambda: gpus)

    return have


def test_auto_takes_the_cpu_and_says_why(machine):
    machine(["CPUExecutionProvider"], gpus=1)
    device = resolve("auto")
    assert (str(device), device.is_gpu) == ("cpu", False)
    assert "no CUDA provider" in device.reason
    machine(["CUDAExecutionProvider", "CPUExecutionProvider"], gpus=0)
    assert "no GPU is visible" in resolve("auto").reason


def test_auto_takes_the_first_gpu_where_one_can_be_used(machine):
    machine(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], 2)
    device = resolve("auto")
    assert str(device) == "cuda:0" and device.is_gpu
    assert device.onnx_providers() == [
        ("TensorrtExecutionProvider", {"device_id": 0}),
        ("CUDAExecutionProvider", {"device_id": 0}),
        "CPUExecutionProvider",
    ]


def test_a_gpu_asked_for_and_missing_stops_the_worker(machine):
    machine(["CPUExecutionProvider"], gpus=1)
    with pytest.raises(DeviceUnavailable, match="GPU extra"):
        resolve("cuda:0")
    machine(["CUDAExecutionProvider", "CPUExecutionProvider"], gpus=1)
    assert resolve("cuda:0").onnx_providers()[0] == ("CUDAExecutionProvider", {"device_id": 0})
    with pytest.raises(DeviceUnavailable, match="1 GPUs are visible"):
        resolve("cuda:1")
    with pytest.raises(DeviceUnavailable, match="not 'gpu'"):
        resolve("gpu")


def test_the_simulated_accelerator_and_the_cpu(machine):
    assert resolve("simulated:40:0.5") == Device(
        "simulated", batch_ms=40.0, image_ms=0.5, reason="a simulated accelerator (benchmark)"
    )
    assert resolve("cpu").onnx_providers() == ["CPUExecutionProvider"]


def test_this_machine_has_no_gpu_to_use():
    """The real check: the CPU build of ONNX Runtime, and no GPU here."""
    assert str(resolve("auto")) == "cpu"
