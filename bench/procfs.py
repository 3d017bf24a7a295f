"""What the benchmark reads about processes from ``/proc``: memory, CPU, children."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int, field: str = "VmRSS") -> float:
    """A process's memory from /proc: ``VmRSS`` now, ``VmHWM`` its peak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def loads_tensorflow(pid: int) -> bool:
    return "tensorflow" in Path(f"/proc/{pid}/maps").read_text()


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def descendants(pid: int) -> list[int]:
    """Children, their children and so on (gunicorn's workers, BentoML's processes)."""
    found = children(pid)
    return found + [pid for child in found for pid in descendants(child)]


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of these processes, all their threads included."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / _TICKS_PER_S


def cpu_ms_per_request(
    roles: dict[str, list[int]], run: Callable[[], None], requests: int
) -> dict[str, float]:
    """CPU milliseconds each role's processes spent per request while ``run`` ran.

    The role ``bench`` is this process, which generates the load.
    """
    roles = roles | {"bench": [os.getpid()]}
    before = {role: cpu_seconds(pids) for role, pids in roles.items()}
    run()
    return {
        role: (cpu_seconds(pids) - before[role]) * 1000 / requests for role, pids in roles.items()
    }
