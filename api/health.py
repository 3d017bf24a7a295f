"""``GET /health``: 200 when Redis answers and a worker has its model loaded."""

from __future__ import annotations

from flask import Blueprint
from redis import RedisError

from api import services
from common.heartbeat import live_workers

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    try:
        redis = services.health_redis()
        redis.ping()
        workers = live_workers(redis)
    except RedisError as exc:
        return _unavailable(["redis"], f"Redis does not answer: {exc}")
    if not workers:
        return _unavailable(["workers"], "No worker with a loaded model is alive.")
    return {"status": "ok", "redis": "up", "workers": workers}


def _unavailable(down: list[str], message: str):
    return {
        "status": "unavailable",
        "down": down,
        "workers": [],
        "error": {"code": "unavailable", "message": message},
    }, 503
