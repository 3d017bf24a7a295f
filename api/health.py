"""Health for people and for orchestrators.

``GET /livez``: the API process answers (restart it if not). ``GET /readyz``: it can
do its work: Redis answers and every queue has a live worker with its model loaded
(send it traffic only then). ``GET /health``: the detailed view, each worker with
its model version and queues. Workers refresh their heartbeat every
``HEARTBEAT_INTERVAL_S`` with a lifetime of three intervals, so a dead or frozen
worker drops out within three intervals; every answer comes from those keys and a
Redis client with sub-second timeouts.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from redis import RedisError

from api import services
from common.heartbeat import live_workers
from common.messages import QUEUES

bp = Blueprint("health", __name__)


@bp.get("/livez")
def livez():
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    workers, problem = _workers()
    if problem is not None:
        return problem
    uncovered = [
        queue for queue in QUEUES if not any(queue in w.get("queues", ()) for w in workers)
    ]
    if uncovered:
        return _unavailable(
            [f"workers:{queue}" for queue in uncovered],
            f"No live worker with a loaded model consumes {', '.join(uncovered)}.",
        )
    return {"status": "ready"}


@bp.get("/health")
def health():
    workers, problem = _workers()
    if problem is not None:
        return problem
    if not workers:
        return _unavailable(["workers"], "No worker with a loaded model is alive.")
    return {"status": "ok", "redis": "up", "workers": workers}


def _workers() -> tuple[list[dict[str, Any]], Any]:
    """The live workers, or the 503 answer when Redis does not answer."""
    try:
        redis = services.health_redis()
        redis.ping()
        return live_workers(redis), None
    except RedisError as exc:
        return [], _unavailable(["redis"], f"Redis does not answer: {exc}")


def _unavailable(down: list[str], message: str):
    return {
        "status": "unavailable",
        "down": down,
        "workers": [],
        "error": {"code": "unavailable", "message": message},
    }, 503
