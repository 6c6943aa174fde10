"""Running the app: a listening socket, uvicorn, and the consumer thread beside it.

uvicorn is imported here and nowhere else in the package, and so is the consumer
(``ingest.consumer``): an application that runs ``LeopardService`` in a server of
its own, or a client, needs neither. Without uvicorn this module does not import,
with an error naming the ``[serve]`` extra; without kafka-python it does, and only
following a stream needs it (its error names the ``[kafka]`` extra).
"""

from __future__ import annotations

import gc
import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ingest.settings import ConsumerSettings
from leopard.core.index import Index
from leopard.errors import InvalidInput
from leopard.http.app import DEFAULT_MAX_BODY, DEFAULT_READY_LAG, LeopardService
from leopard.http.schemas import DEFAULT_MAX_BATCH

try:
    import uvicorn
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    raise ModuleNotFoundError(
        "serving over HTTP needs uvicorn: pip install 'leopard-index[serve]'", name=exc.name
    ) from exc

_kafka_missing: ModuleNotFoundError | None = None
try:
    from ingest.consumer import ChangeConsumer
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    if not (exc.name or "").startswith("kafka"):
        raise
    _kafka_missing = exc  # raised by serve() only when asked to follow a stream

__all__ = ["ConsumerThread", "listen", "serve"]

log = logging.getLogger("leopard.http")

#: how long shutdown waits for the consumer to finish the batch in hand
STOP_TIMEOUT = 60.0


class ConsumerThread:
    """A ``ChangeConsumer`` run in a daemon thread: what ``LeopardService`` starts.

    ``on_change`` (given to ``start``) runs after every applied batch, and once more
    when the consumer stops, so that requests waiting for a version look again.
    """

    def __init__(self, consumer: ChangeConsumer) -> None:
        self.consumer = consumer
        self.error: str | None = None
        self._thread: threading.Thread | None = None

    @property
    def stats(self) -> Any:
        return self.consumer.stats

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self, on_change: Callable[[], None]) -> None:
        chained = self.consumer.on_batch

        def on_batch(stats: Any) -> None:
            if chained is not None:
                chained(stats)
            on_change()

        self.consumer.on_batch = on_batch
        self._thread = threading.Thread(
            target=self._run, args=(on_change,), name="leopard-consumer", daemon=True
        )
        self._thread.start()

    def _run(self, on_change: Callable[[], None]) -> None:
        try:
            self.consumer.run()
        except BaseException as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("the consumer stopped")
        finally:
            on_change()

    def stop(self) -> None:
        """Stop after the batch in hand (the consumer persists it before returning)."""
        if self._thread is None:
            return
        self.consumer.stop()
        self._thread.join(STOP_TIMEOUT)
        if self._thread.is_alive():
            log.warning("the consumer did not stop within %g s", STOP_TIMEOUT)


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket; InvalidInput naming the address when it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        # Listening now, before the loop runs: a client connecting early is queued,
        # not refused, so the address can be announced right away.
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serve(
    index_path: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    consumer_settings: ConsumerSettings | None = None,
    auth_token: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    max_batch: int = DEFAULT_MAX_BATCH,
    ready_max_lag: int = DEFAULT_READY_LAG,
    refresh_interval: float = 1.0,
    access_log: bool = False,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Serve the index at ``index_path`` until SIGINT/SIGTERM.

    With ``consumer_settings``, a ``ChangeConsumer`` on the served ``Index`` runs
    in a thread of this process, so answers follow the stream. ``on_listening``
    is called with the base URL once the port is bound (``port=0`` picks one).
    """
    if consumer_settings is not None and _kafka_missing is not None:
        raise InvalidInput(f"cannot follow {', '.join(consumer_settings.topics)}: {_kafka_missing}")
    index = Index(index_path)
    if consumer_settings is None and refresh_interval > 0:
        # the first refresh opens the follower of another process's writes: here, not
        # in the middle of serving
        index.refresh()
    index.warm()  # every closure in memory before the first request
    # Millions of long-lived sets now sit in the heap: out of the collector's sight,
    # a full collection no longer walks them all in the middle of some request.
    gc.freeze()
    runner = None
    try:
        if consumer_settings is not None:
            runner = ConsumerThread(ChangeConsumer(index_path, consumer_settings, index=index))
        app = LeopardService(
            index,
            consumer=runner,
            auth_token=auth_token,
            max_body=max_body,
            max_batch=max_batch,
            ready_max_lag=ready_max_lag,
            refresh_interval=refresh_interval,
        )
        sock = listen(host, port)
        bound = sock.getsockname()
        shown = f"[{bound[0]}]" if sock.family == socket.AF_INET6 else bound[0]
        config = uvicorn.Config(
            app,
            loop="auto",  # uvloop when installed
            http="auto",  # httptools when installed
            ws="none",
            lifespan="on",
            access_log=access_log,
            log_level="info" if access_log else "warning",
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        if on_listening is not None:
            on_listening(f"http://{shown}:{bound[1]}")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        if runner is not None and not runner.started:
            runner.consumer.close()  # never ran: release its write handle on the index
        index.close()
