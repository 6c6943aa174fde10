"""Running the app: a listening socket, uvicorn, and the consumer thread beside it.

uvicorn is imported here and in ``leopard.http.connections`` (the protocol uvicorn
runs, bounding what clients send before the app sees it), which only this module
imports, and so is the consumer (``ingest.consumer``): an application that runs
``LeopardService`` in a server of its own, or a client, needs neither. Without uvicorn
this module does not import, with an error naming the ``[serve]`` extra; without
kafka-python it does, and only following a stream needs it (its error names the
``[kafka]`` extra).

Every connection takes a file descriptor, and so do the index's files: ``serve``
makes sure the open-file limit leaves room for ``max_connections`` (raising the soft
limit toward the hard one if need be, else serving fewer, with a warning), so that a
crowd of connections cannot leave the index without one.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ingest.settings import ConsumerSettings
from leopard.core.index import Index
from leopard.core.layers import SetReader
from leopard.core.sharded import ServedShard
from leopard.errors import InvalidInput, LeopardError
from leopard.http.app import DEFAULT_MAX_BODY, DEFAULT_READY_LAG, LeopardService
from leopard.http.headlink import HeadLink
from leopard.http.schemas import DEFAULT_MAX_BATCH
from leopard.http.siblings import PromptRefresher, WorkerHeader, counted_protocol
from leopard.http.workers import MAX_WORKERS, Supervisor, Worker

try:
    import uvicorn

    from leopard.http.connections import ConnectionLimits, guarded_protocol, hard_limit
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    raise ModuleNotFoundError(
        "serving over HTTP needs uvicorn: pip install 'leopard-index[serve]'", name=exc.name
    ) from exc

try:
    import resource
except ModuleNotFoundError:  # pragma: no cover - not a Unix
    resource = None  # type: ignore[assignment]

_kafka_missing: ModuleNotFoundError | None = None
try:
    from ingest.consumer import ChangeConsumer
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    if not (exc.name or "").startswith("kafka"):
        raise
    _kafka_missing = exc  # raised by serve() only when asked to follow a stream

__all__ = [
    "Companion",
    "require_stream_client",
    "ConsumerThread",
    "SharedIndex",
    "fit_connections",
    "listen",
    "serve",
    "uvicorn_config",
]


def require_stream_client(settings: ConsumerSettings | None) -> None:
    """InvalidInput naming the missing extra when following ``settings``' topics needs
    the Kafka client and it is not installed."""
    if settings is not None and _kafka_missing is not None:
        raise InvalidInput(f"cannot follow {', '.join(settings.topics)}: {_kafka_missing}")


log = logging.getLogger("leopard.http")

#: how long shutdown waits for the consumer to finish the batch in hand
STOP_TIMEOUT = 60.0
#: file descriptors kept free beyond connections and twice the index's own files
FD_MARGIN = 64


#: a server started beside HTTP (the gRPC one): called with the served index, the
#: consumer (None without a stream) and why the server is not ready (``/readyz``'s
#: reasons, none when it is) once they exist, before HTTP serves; returns what stops
#: it, called once HTTP has stopped and before the index closes
Companion = Callable[[Index, "ChangeConsumer | None", Callable[[], list[str]]], Callable[[], None]]


class SharedIndex(Index):
    """An ``Index`` whose ``refresh`` more than one thread may call: one at a time.

    Without a consumer in the process, the HTTP app's refresher re-reads what another
    process applied, and so may a server beside it (gRPC requests waiting for a
    version); two refreshes at once could install an older incremental layer over a
    newer one.
    """

    def __init__(self, path: str | Path) -> None:
        self._refreshing = threading.Lock()
        super().__init__(path)

    def refresh(self, accept: Callable[[SetReader, SetReader], bool] | None = None) -> bool:
        with self._refreshing:
            return super().refresh(accept)


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

    def upstream_head(self, timeout: float) -> dict[str, int] | None:
        return self.consumer.upstream_head(timeout)

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
        except LeopardError as exc:  # a gap, a refusal: its message says it all
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("the consumer stopped: %s", exc)
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


def fit_connections(max_connections: int) -> tuple[int, str | None]:
    """The number of connections the open-file limit has room for, at most
    ``max_connections``, and a warning when it is fewer.

    Room is needed for every connection let in (up to ``hard_limit``), the files open
    now twice over (a new generation of the index is opened beside the served one
    before the switch) and ``FD_MARGIN``. The soft limit is raised toward the hard one
    when that is short.
    """
    if resource is None:  # pragma: no cover - not a Unix
        return max_connections, None
    try:
        in_use = len(os.listdir("/dev/fd"))
    except OSError:  # pragma: no cover - no /dev/fd
        return max_connections, None
    reserve = 2 * in_use + FD_MARGIN
    need = hard_limit(max_connections) + reserve
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or need <= soft:
        return max_connections, None
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # pragma: no cover - refused by the system
            pass
    if need <= soft:
        return max_connections, None
    fit = max(1, (soft - reserve) * 8 // 9)
    while fit > 1 and hard_limit(fit) + reserve > soft:
        fit -= 1
    return fit, (
        f"the open-file limit ({soft:,}, {in_use} in use) leaves room for {fit:,} "
        f"connections, not {max_connections:,}: serving at most {fit:,} "
        "(raise the limit with 'ulimit -n')"
    )


def uvicorn_config(app: Any, limits: ConnectionLimits, **options: Any) -> uvicorn.Config:
    """A uvicorn configuration running ``app`` with the guarded connection protocol
    (``limits.idle_timeout`` is its keep-alive timeout)."""
    return uvicorn.Config(
        app,
        http=guarded_protocol(limits),
        ws="none",
        timeout_keep_alive=limits.idle_timeout,  # type: ignore[arg-type]  # a float will do
        **options,
    )


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
    limits: ConnectionLimits | None = None,
    on_listening: Callable[[str], None] | None = None,
    store_id: str | None = None,
    upstream_openfga: str | None = None,
    public_url: str | None = None,
    beside: Sequence[Companion] = (),
    follower: Callable[[Index], ChangeConsumer] | None = None,
    workers: int = 1,
) -> None:
    """Serve the index at ``index_path`` until SIGINT/SIGTERM.

    With ``consumer_settings``, a ``ChangeConsumer`` on the served ``Index`` runs
    in a thread of this process, so answers follow the stream. ``limits`` bound what
    clients may send and how many connections are served (``ConnectionLimits``'
    defaults without it). ``on_listening`` is called with the base URL once the port
    is bound (``port=0`` picks one). ``store_id`` is the OpenFGA store the index answers
    for (default: ``leopard.http.openfga.default_store_id``), ``upstream_openfga`` the
    OpenFGA server that what the index cannot answer is forwarded to, ``public_url``
    the base of the URLs AuthZEN's discovery document names (default: the request's
    Host). Each of
    ``beside`` (a ``Companion``, such as the gRPC server) is started on the same index
    and consumer before HTTP serves, and stopped after. ``follower`` makes, on the
    served index, the consumer of an upstream followed directly (``leopard serve
    --source``: SpiceDB's Watch, OpenFGA's ReadChanges), run as the Kafka consumer is.

    ``workers`` > 1 serves from that many processes on the one port (see
    ``leopard.http.workers``): the first runs the consumer (or follower) and the
    companions, the others follow its writes by re-reading the index, which needs
    ``refresh_interval`` > 0; ``on_listening`` is called once all of them listen, and
    ``ServiceError`` is raised when a worker cannot serve.
    """
    limits = limits if limits is not None else ConnectionLimits()
    require_stream_client(consumer_settings)
    options = _Options(
        index_path=index_path,
        host=host,
        port=port,
        consumer_settings=consumer_settings,
        auth_token=auth_token,
        max_body=max_body,
        max_batch=max_batch,
        ready_max_lag=ready_max_lag,
        refresh_interval=refresh_interval,
        access_log=access_log,
        limits=limits,
        on_listening=on_listening,
        store_id=store_id,
        upstream_openfga=upstream_openfga,
        public_url=public_url,
        beside=beside,
        follower=follower,
    )
    if workers == 1:
        _serve(options, None)
        return
    if not 1 <= workers <= MAX_WORKERS:
        raise InvalidInput(f"workers must be 1 to {MAX_WORKERS}, not {workers!r}")
    streaming = consumer_settings is not None or follower is not None
    if streaming and refresh_interval <= 0:
        raise InvalidInput(
            f"with {workers} workers and a change stream, the workers without the consumer "
            "follow it by re-reading the index: the refresh interval must be above 0"
        )
    Supervisor(
        workers,
        lambda worker: _serve(options, worker),
        host=host,
        port=port,
        consumer=streaming,
        on_listening=on_listening,
    ).run()


@dataclass(frozen=True)
class _Options:
    """``serve``'s arguments, for each worker."""

    index_path: str | Path
    host: str
    port: int
    consumer_settings: ConsumerSettings | None
    auth_token: str | None
    max_body: int
    max_batch: int
    ready_max_lag: int
    refresh_interval: float
    access_log: bool
    limits: ConnectionLimits
    on_listening: Callable[[str], None] | None
    store_id: str | None
    upstream_openfga: str | None
    public_url: str | None
    beside: Sequence[Companion]
    follower: Callable[[Index], ChangeConsumer] | None


def _serve(o: _Options, worker: Worker | None) -> None:
    """Serve in this process: the whole server (``worker`` None), or one worker of it.

    A worker other than the consumer's runs neither the consumer nor the companions,
    and follows the index with a ``PromptRefresher``; every worker listens on its own
    socket, counts its connections with the others and names itself in its answers.
    """
    limits = o.limits
    lead = worker is None or worker.slot == 0
    consumer_settings = o.consumer_settings if lead else None
    follower = o.follower if lead else None
    index = SharedIndex(o.index_path)
    # worker 0's consumer switches to a rebuilt generation once it has caught up with
    # the stream: the other workers follow it then, not after a grace of their own
    index.follows_consumer = worker is not None and worker.wake_fd is not None
    # a shard of a sharded index: switches build when the manifest does, says which it is
    shard = ServedShard.of(index)
    if o.consumer_settings is not None:  # every worker: they answer tokens alike
        index.topics = frozenset(o.consumer_settings.topics)
    if consumer_settings is None and follower is None and o.refresh_interval > 0:
        # the first refresh opens the follower of another process's writes: here, not
        # in the middle of serving
        index.refresh()
    index.warm()  # every closure in memory before the first request
    # Millions of long-lived sets now sit in the heap: out of the collector's sight,
    # a full collection no longer walks them all in the middle of some request.
    gc.freeze()
    runner = None
    stops: list[Callable[[], None]] = []
    link = None
    if worker is not None and worker.head_fd is not None:
        link = HeadLink(worker.head_fd, index)  # HIGHER_CONSISTENCY asks worker 0
    try:
        if consumer_settings is not None:
            runner = ConsumerThread(ChangeConsumer(o.index_path, consumer_settings, index=index))
        elif follower is not None:
            runner = ConsumerThread(follower(index))
        if runner is not None and worker is not None:
            _tell_siblings(runner.consumer, worker)
        app = LeopardService(
            index,
            consumer=runner,
            auth_token=o.auth_token,
            max_body=o.max_body,
            max_batch=o.max_batch,
            ready_max_lag=o.ready_max_lag,
            refresh_interval=o.refresh_interval,
            store_id=o.store_id,
            upstream_openfga=o.upstream_openfga,
            public_url=o.public_url,
            shard=shard,
            head=link,
            tell_head=worker.tell_head if worker is not None and runner is not None else (),
        )
        for companion in o.beside if lead else ():
            consumer = runner.consumer if runner is not None else None
            stops.append(companion(index, consumer, lambda: app.handlers.readiness().reasons))
        served: Any = app
        if worker is not None:
            if app.refresher is not None:
                # the same re-reads, done at once for a request that waits
                app.refresher = app.handlers.refresher = PromptRefresher(
                    app.waits, o.refresh_interval, wake_fd=worker.wake_fd
                )
            served = WorkerHeader(app, worker.slot)
        sock = listen(o.host, o.port) if worker is None else worker.listen()
        bound = sock.getsockname()
        shown = f"[{bound[0]}]" if sock.family == socket.AF_INET6 else bound[0]
        fit, warning = fit_connections(limits.max_connections)
        if fit != limits.max_connections:
            limits = replace(limits, max_connections=fit)
        config = uvicorn_config(
            served,
            limits,
            loop="auto",  # uvloop when installed
            lifespan="on",
            access_log=o.access_log,
            log_level="info" if o.access_log else "warning",
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        if worker is not None:
            config.http = counted_protocol(
                guarded_protocol(limits), worker.connections, worker.slot
            )
            worker.ready()
        elif o.on_listening is not None:
            o.on_listening(f"http://{shown}:{bound[1]}")
        if warning is not None and lead:
            log.warning("%s", warning)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        for stop in reversed(stops):
            try:
                stop()
            except Exception:  # the others must stop, and the index close, all the same
                log.exception("stopping a server beside HTTP failed")
        if runner is not None and not runner.started:
            runner.consumer.close()  # never ran: release its write handle on the index
        index.close()


def _tell_siblings(consumer: ChangeConsumer, worker: Worker) -> None:
    """After every batch the consumer applies, wake the workers waiting for it."""
    chained = consumer.on_batch

    def on_batch(stats: Any) -> None:
        if chained is not None:
            chained(stats)
        worker.applied()

    consumer.on_batch = on_batch
