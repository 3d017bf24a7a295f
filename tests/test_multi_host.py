"""Many machines: each part on its own network namespace ("host"), reaching the
others only by address through a bridge, each with its own ``ECOSNAP_VAR_DIR``.

    store  10.77.0.10   Redis and the GCS emulator (photos, zips, the model registry)
    api    10.77.0.20   gunicorn
    w1, w2 10.77.0.31-2 predict workers
    eval   10.77.0.40   the evaluate worker (it validates uploaded models)

Under load: every job is answered once, work spreads over both predict hosts, a
model activated through the API is served by every host, and cutting one worker
host off the network (its link down) mid-load loses no job and answers none twice.
Needs root (``ip netns``); the machine and CI run as root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests
from redis import Redis

from common.messages import EVALUATE_QUEUE, PREDICT_QUEUE
from common.model_metadata import ModelMetadata
from common.processes import start_api, start_redis, start_worker, stop, wait_until
from common.settings import DEFAULT_MODEL_PATH
from tests.conftest import UNLIMITED, photo
from tests.faults import Load, Outcome, settle

pytestmark = pytest.mark.slow

ADMIN_KEY = "multi-host-admin-key-0123456789"
BRIDGE_ADDRESS = "10.77.0.1"
HOSTS = {"store": "10.77.0.10", "api": "10.77.0.20", "w1": "10.77.0.31", "w2": "10.77.0.32",
         "eval": "10.77.0.40"}  # fmt: skip
EMULATOR_PORT, REDIS_PORT, API_PORT = 9023, 6390, 8080


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def namespaces_possible() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    name = f"eco-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode == 0
    if made:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return made


@dataclass
class Network:
    """A bridge in this namespace and one namespace per host, joined by veth pairs."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:5])

    @property
    def bridge(self) -> str:
        return f"ecobr{self.tag}"

    def namespace(self, host: str) -> str:
        return f"eco{self.tag}-{host}"

    def link(self, host: str) -> str:
        """This namespace's end of the host's cable."""
        return f"ev{self.tag}{host}"[:15]

    def prefix(self, host: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(host)]

    def build(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for host, address in HOSTS.items():
            namespace, outer = self.namespace(host), self.link(host)
            ip("netns", "add", namespace)
            ip("link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            ip("link", "set", outer, "master", self.bridge)
            ip("link", "set", outer, "up")
            ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", namespace, "link", "set", "eth0", "up")
            ip("-n", namespace, "link", "set", "lo", "up")

    def cut(self, host: str, connected: bool) -> None:
        ip("link", "set", self.link(host), "up" if connected else "down")

    def remove(self) -> None:
        for host in HOSTS:
            subprocess.run(["ip", "netns", "del", self.namespace(host)], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    if not namespaces_possible():
        pytest.skip("network namespaces need root and iproute2 (ip netns)")
    net = Network()
    try:
        net.build()
        yield net
    finally:
        net.remove()


@dataclass
class Hosts:
    base_url: str
    redis: Redis
    workers: dict[str, subprocess.Popen]


@pytest.fixture(scope="module")
def hosts(network: Network, tmp_path_factory) -> Iterator[Hosts]:
    root = tmp_path_factory.mktemp("hosts")
    store = HOSTS["store"]
    redis_process, redis_url = start_redis(root / "store" / "redis", REDIS_PORT, store,
                                           network.prefix("store"))  # fmt: skip
    emulator = subprocess.Popen(
        [*network.prefix("store"), sys.executable, "-m", "gcp_storage_emulator", "start",
         "--host", store, "--port", str(EMULATOR_PORT), "--in-memory",
         "--default-bucket", "ecosnap-hosts"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    processes = [redis_process, emulator]

    def env(host: str) -> dict[str, str]:
        return {"REDIS_URL": redis_url, "GCS_BUCKET": "ecosnap-hosts",
                "STORAGE_EMULATOR_HOST": f"http://{store}:{EMULATOR_PORT}",
                "ECOSNAP_VAR_DIR": str(root / host), "ADMIN_API_KEY": ADMIN_KEY,
                "HEARTBEAT_INTERVAL_S": "1", **UNLIMITED}  # fmt: skip

    try:
        wait_until(lambda: emulator_answers(store), 60, "the GCS emulator", emulator)
        workers = {
            host: start_worker(env(host), host, root / f"{host}.log", (queue,),
                               prefix=network.prefix(host))
            for host, queue in (("w1", PREDICT_QUEUE), ("w2", PREDICT_QUEUE),
                                ("eval", EVALUATE_QUEUE))
        }  # fmt: skip
        processes += workers.values()
        processes.append(start_api(env("api"), API_PORT, log_path=root / "api.log",
                                   address=HOSTS["api"], prefix=network.prefix("api")))  # fmt: skip
        base_url = f"http://{HOSTS['api']}:{API_PORT}"
        wait_until(lambda: len(live_workers(base_url)) == 3, 300, "three worker hosts")
        yield Hosts(base_url, Redis.from_url(redis_url), workers)
    except BaseException as exc:
        exc.add_note("\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}"
                               for p in sorted(root.glob("*.log"))))  # fmt: skip
        raise
    finally:
        for process in reversed(processes):
            stop(process, 20)


def emulator_answers(address: str) -> bool:
    try:
        return requests.get(f"http://{address}:{EMULATOR_PORT}/storage/v1/b", timeout=1).ok
    except requests.RequestException:
        return False


def live_workers(base_url: str) -> list[dict]:
    try:
        return requests.get(f"{base_url}/health", timeout=2).json().get("workers", [])
    except (requests.RequestException, ValueError):
        return []


def served_by(hosts: Hosts, records: dict[str, dict]) -> Counter[str]:
    """How many of the jobs each worker host answered (job records name the pid)."""
    by_pid = {str(process.pid): host for host, process in hosts.workers.items()}
    return Counter(
        by_pid.get(r.get("worker", "").rsplit(":", 1)[-1], "?") for r in records.values()
    )


def test_jobs_spread_over_hosts_and_each_is_answered_once(hosts):
    load = Load(hosts.redis, hosts.base_url)
    outcome = load.outcome("steady load", "every job answered once", time.time())
    outcome.assert_kept()
    shares = served_by(hosts, settle(hosts.redis, load.clients.job_ids))
    assert shares["w1"] > 0 and shares["w2"] > 0, shares
    assert set(shares) <= {"w1", "w2"}


def test_a_model_activated_through_the_api_is_served_by_every_host(hosts, tmp_path):
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    metadata = ModelMetadata.for_model(DEFAULT_MODEL_PATH)
    fields = metadata.to_fields() | {"version": "hosts-2", "sha256": None}
    upload = requests.post(
        f"{hosts.base_url}/models", headers=admin, timeout=120,
        files={"model": ("model.h5", DEFAULT_MODEL_PATH.read_bytes()),
               "metadata": (None, json.dumps(fields))},
    )  # fmt: skip
    assert upload.status_code == 202, upload.text
    wait_until(lambda: requests.get(upload.json()["status_url"], headers=admin,
                                    timeout=5).json()["status"] == "succeeded",
               300, "validation on the eval host")  # fmt: skip
    activated = requests.put(f"{hosts.base_url}/models/active", json={"version": "hosts-2"},
                             headers=admin, timeout=30)  # fmt: skip
    assert activated.status_code == 200, activated.text

    def on_new_version() -> bool:
        return {w["model_version"] for w in live_workers(hosts.base_url)} == {"hosts-2"}

    wait_until(on_new_version, 120, "every host on hosts-2")
    answer = requests.post(f"{hosts.base_url}/predict?wait=30",
                           files={"file": ("p.jpg", photo())},
                           timeout=60)  # fmt: skip
    assert answer.json()["model_version"] == "hosts-2"


def test_a_worker_host_cut_off_mid_load_loses_no_job(hosts, network):
    load = Load(hosts.redis, hosts.base_url)
    fault_at = time.time()
    network.cut("w1", connected=False)
    try:
        outcome: Outcome = load.outcome("worker host cut off the network mid-load", "", fault_at)
    finally:
        network.cut("w1", connected=True)
    outcome.assert_kept()
    assert outcome.accepted > 0, outcome
    outcome.assert_recovered()
