"""The Redis client and the ``Store`` built on it, kept in ``app.extensions``.

``init_app`` picks the Redis: ``WIDGET_REDIS_URL`` when set (a Redis Cluster when
``WIDGET_REDIS_CLUSTER`` is true), otherwise the embedded redis-server under
``WIDGET_DATA_DIR`` (started if nothing answers there yet). The client reconnects by
itself after Redis restarts; short timeouts make an outage a quick 503, not a hang.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask, current_app
from limits.storage import RedisClusterStorage, RedisStorage, Storage
from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    CrossSlotTransactionError,
    InvalidPipelineStack,
    RedisClusterException,
    RedisError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .store import RedisClient, Store

log = logging.getLogger(__name__)

CLIENT_OPTIONS = {
    "socket_connect_timeout": 1.0,
    "socket_timeout": 2.0,
    "health_check_interval": 15,
}
CLUSTER_NODE_CONNECTIONS = 2000  # per node and process, at most


class ClusterClient(RedisCluster):
    """redis-py's cluster client, whose own failures (no node reachable, a slot nobody
    serves during a failover) are ``RedisClusterException``s, not ``RedisError``s: here
    they are raised as connection errors, so that whatever handles an unavailable Redis
    (a 503 with ``Retry-After``, a paused sealer, a hub that resubscribes) handles them.

    redis-py asks the cluster for its slots when the client is made, and fails when no
    node answers. A worker that starts during an outage must not fail (gunicorn would
    stop every worker): then the client is finished at its first use that finds a node,
    and until then each use fails as an unavailable Redis does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_made_with"] = (args, kwargs)
        self.__dict__["_making"] = threading.Lock()
        try:
            super().__init__(*args, **kwargs)
        except (RedisClusterException, RedisError) as exc:
            log.warning("Redis Cluster unreachable at startup (%s); retrying on use", exc)

    def __getattr__(self, name: str) -> Any:
        # Only reached for an attribute that __init__ never set: it failed part way.
        if name.startswith("__") or "_made_with" not in self.__dict__:
            raise AttributeError(name)
        with self.__dict__["_making"]:
            if "nodes_manager" not in self.__dict__:
                args, kwargs = self.__dict__["_made_with"]
                with _unavailable():
                    super().__init__(*args, **kwargs)
        return object.__getattribute__(self, name)

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        with _unavailable():
            return super().execute_command(*args, **kwargs)  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)  # type: ignore[no-untyped-call]
        execute = pipe.execute

        def guarded(raise_on_error: bool = True) -> Any:
            with _unavailable():
                return execute(raise_on_error)

        pipe.execute = guarded
        return pipe


@contextmanager
def _unavailable() -> Iterator[None]:
    try:
        yield
    except (CrossSlotTransactionError, InvalidPipelineStack):
        raise  # the caller's mistake, not an outage
    except RedisClusterException as exc:
        raise RedisConnectionError(f"Redis Cluster unavailable: {exc}") from exc


def make_client(url: str, cluster: bool = False) -> RedisClient:
    """A client for ``url``; retries once on a dropped connection, then gives up quickly.

    A cluster client learns which node serves which slot when it is made, and again
    whenever a node fails or answers MOVED (after a failover); it needs one node to answer
    when it is made."""
    retry = Retry(ExponentialBackoff(cap=0.25, base=0.05), 1)
    errors = [RedisConnectionError, RedisTimeoutError]
    if cluster:
        # redis-py caps each node's pool at 100 connections and refuses beyond
        # (MaxConnectionsError); a gevent worker admitting a burst of streams needs more.
        options = {**CLIENT_OPTIONS, "max_connections": CLUSTER_NODE_CONNECTIONS}
        return ClusterClient.from_url(url, retry=retry, **options)
    return Redis.from_url(url, retry=retry, retry_on_error=errors, **CLIENT_OPTIONS)


class ClusterLimiterStorage(RedisClusterStorage):
    """flask-limiter's Redis Cluster storage on a ``ClusterClient`` (same options, and
    it starts during an outage too): ``undersign+cluster://host:port``."""

    STORAGE_SCHEME = ["undersign+cluster"]

    def __init__(
        self,
        uri: str,
        key_prefix: str = RedisStorage.PREFIX,
        wrap_exceptions: bool = False,
        **options: float | str | bool,
    ) -> None:
        self.key_prefix = key_prefix
        self.target_server = "redis"
        self.dependency = self.dependencies["redis"].module
        self.storage = make_client("redis://" + uri.split("://", 1)[1], cluster=True)
        self.initialize_storage(uri)
        Storage.__init__(self, uri, wrap_exceptions, **options)


def limiter_storage_uri(url: str, cluster: bool = False) -> str:
    """The same Redis, spelled the way the ``limits`` library wants it."""
    if url.startswith("unix://"):
        return "redis+unix://" + url[len("unix://") :]
    if cluster:
        return "undersign+cluster://" + url.split("://", 1)[1]
    return url


def init_app(app: Flask) -> None:
    if not app.config["REDIS_URL"]:
        from .server import ensure_embedded_redis

        app.config["REDIS_URL"] = ensure_embedded_redis(app.config["DATA_DIR"])
        app.config["EMBEDDED_REDIS"] = True
    client = make_client(app.config["REDIS_URL"], app.config["REDIS_CLUSTER"])
    app.extensions["undersign.redis"] = client
    app.extensions["undersign.store"] = Store(
        client,
        surge_floor=app.config["SURGE_FLOOR"],
        wait_replicas=app.config["REDIS_WAIT_REPLICAS"],
        wait_timeout_ms=app.config["REDIS_WAIT_TIMEOUT_MS"],
        sharded=pubsub_mode(app.config["REDIS_PUBSUB"], app.config["REDIS_CLUSTER"]) == "sharded",
    )


def pubsub_mode(setting: str, cluster: bool) -> str:
    """``WIDGET_REDIS_PUBSUB`` as used: ``auto`` is sharded on a cluster, else classic."""
    if setting == "auto":
        return "sharded" if cluster else "classic"
    return setting


def get_store() -> Store:
    store: Store = current_app.extensions["undersign.store"]
    return store


def get_redis() -> RedisClient:
    client: RedisClient = current_app.extensions["undersign.redis"]
    return client
