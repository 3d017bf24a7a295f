"""What the API tells operators: request ids, Prometheus metrics, a line per request.

Every answer carries ``X-Request-ID`` (the client's, when it sent a plain one, else a
new one), which also goes into the log lines of the request and into each photo's
job, so a worker's lines about it can be found. ``GET /metrics`` is Prometheus' text
format, aggregated over every gunicorn process (prometheus_client's multiprocess mode,
``PROMETHEUS_MULTIPROC_DIR``, which ``start_api`` sets): requests by route, method and
status, their latency, jobs accepted and refused (and why), and each queue's depth
read from Redis at scrape time.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from redis import RedisError

from api import services
from common.jobs import pending_key
from common.logs import REQUEST_ID
from common.messages import QUEUES

REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
log = logging.getLogger("api.requests")

REQUESTS = Counter("ecosnap_http_requests_total", "HTTP requests answered",
                   ["route", "method", "status"])  # fmt: skip
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LATENCY = Histogram("ecosnap_http_request_seconds", "Time to answer a request", ["route"],
                    buckets=SECONDS_BUCKETS)  # fmt: skip
ACCEPTED = Counter("ecosnap_jobs_accepted_total", "Jobs accepted", ["kind"])
REFUSED = Counter("ecosnap_jobs_refused_total", "Requests refused to protect the service",
                  ["reason"])  # fmt: skip
REFUSAL_CODES = frozenset({"overloaded", "rate_limited", "too_many_evaluations", "unavailable"})

bp = Blueprint("telemetry", __name__)


class QueueDepths:
    """Each queue's depth at scrape time: its jobs waiting (photos, or evaluations
    queued or running) and the broker's messages."""

    def collect(self):
        jobs = GaugeMetricFamily("ecosnap_queue_jobs", "Jobs waiting for a worker",
                                 labels=["queue"])  # fmt: skip
        messages = GaugeMetricFamily("ecosnap_queue_messages", "Messages in the broker",
                                     labels=["queue"])  # fmt: skip
        redis = services.health_redis()
        try:
            for queue, kind in zip(QUEUES, ("predict", "evaluate"), strict=True):
                jobs.add_metric([queue], redis.zcard(pending_key(kind)))
                messages.add_metric([queue], redis.llen(queue))
        except RedisError:
            return []
        return [jobs, messages]


@bp.get("/metrics")
def metrics():
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:  # one process (the Flask test client, a development server)
        from prometheus_client import REGISTRY

        registry = REGISTRY
    body = generate_latest(registry) + generate_latest(_depths_registry())
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


def _depths_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(QueueDepths())
    return registry


def register(app: Flask) -> None:
    @app.before_request
    def start() -> None:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if REQUEST_ID_PATTERN.match(given) else uuid.uuid4().hex
        g.started = time.perf_counter()
        REQUEST_ID.set(g.request_id)

    @app.after_request
    def finish(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "unmatched"
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        LATENCY.labels(route).observe(seconds)
        if response.status_code in (429, 503) and response.is_json:
            code = (response.get_json(silent=True) or {}).get("error", {}).get("code")
            if code in REFUSAL_CODES:
                REFUSED.labels(code).inc()
        response.headers["X-Request-ID"] = g.get("request_id", "")
        job = {"job_id": g.job_id} if "job_id" in g else {}
        log.info("%s %s %d", request.method, request.path, response.status_code,
                 extra={"route": route, "status": response.status_code,
                        "ms": round(seconds * 1000, 2), **job})  # fmt: skip
        return response

    app.register_blueprint(bp)


def request_id() -> str:
    return g.get("request_id", "")


def name_job(job_id: str) -> None:
    """Put the job this request made into its log line: one grep finds the request,
    its job and the worker's lines."""
    g.job_id = job_id
