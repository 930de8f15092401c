"""Production gunicorn settings, in one place for ``undersign serve`` and docker-compose.

Use it directly with ``gunicorn -c python:widget.gunicorn_conf 'widget:create_app()'``.
gevent workers keep thousands of idle event streams open cheaply; ``WEB_CONCURRENCY``
sets the number of worker processes (default: one per CPU, at least two).
Gunicorn believes ``X-Forwarded-Proto`` (and its other forwarder headers) only from the
proxies in ``WIDGET_TRUSTED_PROXIES``, the same list the app uses.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from pathlib import Path
from typing import Any

from widget.proxies import LOOPBACK, parse_trusted_proxies

bind = [os.environ.get("BIND", "127.0.0.1:8000")]
workers = int(os.environ.get("WEB_CONCURRENCY", max(2, multiprocessing.cpu_count())))
worker_class = "gevent"
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "20000"))
keepalive = 30
timeout = 30
graceful_timeout = 10
accesslog = None  # access logs would carry client addresses; keep them off
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
forwarded_allow_ips = str(parse_trusted_proxies(os.environ.get("WIDGET_TRUSTED_PROXIES", LOOPBACK)))
proc_name = "undersign"
# gunicorn 27 opens a control socket at one fixed path per user; several instances on a
# host would fight over it, and nothing here uses it.
control_socket_disable = True


def _metrics_dir() -> str:
    """A fresh folder for prometheus-client's multiprocess files, set before workers start."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        folder = tempfile.mkdtemp(prefix="undersign-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    for stale in Path(folder).glob("*.db"):
        stale.unlink()
    return folder


def on_starting(server: Any) -> None:
    _metrics_dir()


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def post_worker_init(worker: Any) -> None:
    # Open event streams never finish by themselves; end them on SIGTERM so a graceful
    # stop or restart takes moments, not graceful_timeout (browsers reconnect by retry:).
    import signal

    from widget.live import configure_worker, stop_streams

    configure_worker(worker.worker_connections)

    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        stop_streams()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)


HOST_WARNING = """
  ************************************************************************************
  WARNING: WIDGET_PUBLIC_URL is not set. {what}
  Set WIDGET_PUBLIC_URL=https://your.public.host in production.
  ************************************************************************************
"""


def host_warning() -> str | None:
    """The loud startup warning when links would be built from the request's Host."""
    if os.environ.get("WIDGET_PUBLIC_URL", "").strip():
        return None
    if os.environ.get("WIDGET_ALLOWED_HOSTS", "").strip():
        what = (
            "Links and the paste snippet take their host from each request\n"
            "  (one of WIDGET_ALLOWED_HOSTS)."
        )
    else:
        what = (
            "Every Host header is accepted and links and the paste snippet are built from it,\n"
            "  so anyone can make the service hand out links to another host."
        )
    return HOST_WARNING.format(what=what)


def when_ready(server: Any) -> None:
    warning = host_warning()
    if warning:
        server.log.warning(warning)
    for address in server.cfg.bind:
        base = f"http://{address}"
        server.log.info("Undersign is ready at %s  (demo allied page: %s/demo)", base, base)
        print(
            f"\n  Undersign is running: {base}\n  Demo allied page:     {base}/demo\n", flush=True
        )


SETTING_NAMES = (
    "bind",
    "workers",
    "worker_class",
    "worker_connections",
    "keepalive",
    "timeout",
    "graceful_timeout",
    "accesslog",
    "errorlog",
    "loglevel",
    "forwarded_allow_ips",
    "proc_name",
    "control_socket_disable",
    "when_ready",
    "on_starting",
    "child_exit",
    "post_worker_init",
)


def settings() -> dict[str, Any]:
    """These settings as a dict, for an embedded gunicorn ``BaseApplication``."""
    values = globals()
    return {name: values[name] for name in SETTING_NAMES}
