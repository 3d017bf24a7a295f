"""The deployment files, checked offline: every Kubernetes manifest against the
API's own schemas (kubernetes-validate, strict: no unknown fields), and compose."""

import os
import re
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from common.processes import PROJECT_ROOT

KUBERNETES = PROJECT_ROOT / "deploy" / "kubernetes"
# KEDA's resource is a custom one: no schema ships with Kubernetes.
CUSTOM_KINDS = {"ScaledObject"}


def resources() -> list[dict]:
    listed = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"]
    return [doc for name in listed for doc in yaml.safe_load_all((KUBERNETES / name).read_text())]


def test_the_kustomization_lists_every_manifest():
    listed = set(yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}


def named(resource: dict) -> str:
    return f"{resource['kind']}/{resource['metadata']['name']}"


@pytest.mark.parametrize(
    "resource", [r for r in resources() if r["kind"] not in CUSTOM_KINDS], ids=named
)
def test_each_manifest_is_valid_kubernetes(resource):
    kubernetes_validate.validate(resource, kubernetes_validate.latest_version(), strict=True)


def test_predict_workers_scale_on_the_predict_queue():
    (scaled,) = [r for r in resources() if r["kind"] == "ScaledObject"]
    (trigger,) = scaled["spec"]["triggers"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "ecosnap-worker-predict"
    assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == "predict"


def test_probes_resources_and_configuration_from_one_place():
    deployments = {r["metadata"]["name"]: r for r in resources() if r["kind"] == "Deployment"}
    assert set(deployments) == {"ecosnap-api", "ecosnap-worker-predict",
                                "ecosnap-worker-evaluate", "ecosnap-worker-gpu"}  # fmt: skip
    for deployment in deployments.values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert {"livenessProbe", "readinessProbe"} <= container.keys()
        assert container["resources"]["requests"] and container["resources"]["limits"]
        sources = [next(iter(source.values()))["name"] for source in container["envFrom"]]
        assert "ecosnap-config" in sources
    api = deployments["ecosnap-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/livez"
    gpu = deployments["ecosnap-worker-gpu"]["spec"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_compose_workers_can_be_scaled():
    """``docker compose up --scale worker=4`` needs workers without fixed names or ports."""
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    for name in ("worker", "worker-evaluate", "worker-gpu"):
        service = compose["services"][name]
        assert "container_name" not in service and "ports" not in service
        assert service["restart"] == "unless-stopped"
    gpu = compose["services"]["worker-gpu"]
    assert gpu["profiles"] == ["gpu"] and gpu["environment"]["DEVICE"] == "cuda:0"
    (reserved,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert reserved["capabilities"] == ["gpu"] and reserved["count"] == 1


def probe(redis_url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker.probe"], cwd=PROJECT_ROOT,
                          env={**os.environ, "REDIS_URL": redis_url}, capture_output=True,
                          text=True, timeout=30)  # fmt: skip


def test_the_worker_probe_tells_whether_this_hosts_worker_beats(stack, redis_url):
    assert probe(stack.redis_url).returncode == 0  # the session stack's worker, here
    unwatched = probe(redis_url.rsplit("/", 1)[0] + "/14")  # a database no worker uses
    assert unwatched.returncode == 1 and "No worker on" in unwatched.stderr


def test_the_dashboard_and_scrape_config_name_metrics_the_service_exports():
    import json

    from prometheus_client.metrics import MetricWrapperBase

    from api import telemetry
    from worker import metrics

    exported = {
        metric._name for module in (telemetry, metrics) for metric in vars(module).values()
        if isinstance(metric, MetricWrapperBase)
    } | {"ecosnap_queue_jobs", "ecosnap_queue_messages"}  # fmt: skip
    dashboard = json.loads((PROJECT_ROOT / "deploy" / "grafana-dashboard.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {re.sub(r"_(bucket|sum|count|total)$", "", name)
            for expr in expressions for name in re.findall(r"ecosnap_[a-z_]+", expr)}  # fmt: skip
    assert used <= {re.sub(r"_total$", "", name) for name in exported}, used
    scrape = yaml.safe_load((PROJECT_ROOT / "deploy" / "prometheus.yml").read_text())
    assert {job["job_name"] for job in scrape["scrape_configs"]} == {
        "ecosnap-api",
        "ecosnap-workers",
    }
