"""The Redis client and the ``Store`` built on it, kept in ``app.extensions``.

``init_app`` picks the Redis: ``WIDGET_REDIS_URL`` when set (a Redis Cluster when
``WIDGET_REDIS_CLUSTER`` is true), otherwise the embedded redis-server under
``WIDGET_DATA_DIR`` (started if nothing answers there yet). The client reconnects by
itself after Redis restarts; short timeouts make an outage a quick 503, not a hang.
"""

from __future__ import annotations

from flask import Flask, current_app
from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .store import RedisClient, Store

CLIENT_OPTIONS = {
    "socket_connect_timeout": 1.0,
    "socket_timeout": 2.0,
    "health_check_interval": 15,
}


def make_client(url: str, cluster: bool = False) -> RedisClient:
    """A client for ``url``; retries once on a dropped connection, then gives up quickly."""
    retry = Retry(ExponentialBackoff(cap=0.25, base=0.05), 1)
    errors = [RedisConnectionError, RedisTimeoutError]
    if cluster:
        return RedisCluster.from_url(url, retry=retry, **CLIENT_OPTIONS)
    return Redis.from_url(url, retry=retry, retry_on_error=errors, **CLIENT_OPTIONS)


def limiter_storage_uri(url: str, cluster: bool = False) -> str:
    """The same Redis, spelled the way the ``limits`` library wants it."""
    if url.startswith("unix://"):
        return "redis+unix://" + url[len("unix://") :]
    if cluster:
        return "redis+cluster://" + url.split("://", 1)[1]
    return url


def init_app(app: Flask) -> None:
    if not app.config["REDIS_URL"]:
        from .server import ensure_embedded_redis

        app.config["REDIS_URL"] = ensure_embedded_redis(app.config["DATA_DIR"])
        app.config["EMBEDDED_REDIS"] = True
    client = make_client(app.config["REDIS_URL"], app.config["REDIS_CLUSTER"])
    app.extensions["undersign.redis"] = client
    app.extensions["undersign.store"] = Store(client, surge_floor=app.config["SURGE_FLOOR"])


def get_store() -> Store:
    store: Store = current_app.extensions["undersign.store"]
    return store


def get_redis() -> RedisClient:
    client: RedisClient = current_app.extensions["undersign.redis"]
    return client
