"""Serving on every core: ``leopard serve --workers N``, N processes on one port.

A supervisor (the process ``leopard serve`` started) forks N workers and itself serves
nothing. Each worker opens the index, warms it and listens on the same address with
its own ``SO_REUSEPORT`` socket, so the kernel spreads connections over the workers
(a connection stays with the worker that accepted it). Worker 0 runs the change
consumer (``--brokers``, ``--source``) and the servers beside HTTP (gRPC); the others
open the index read-only and follow what worker 0 applies through the path every
other process uses (``Index.refresh``: a secondary RocksDB instance).

Why fork and not spawn: the supervisor has opened nothing (no index, no thread of its
own: only the idle threads of jemalloc and OpenBLAS, which both mind ``fork``), and
forking keeps what the command line built (the gRPC and upstream factories) without
re-parsing it. Why a socket per worker and not one shared: asyncio and libuv accept a
whole burst of connections in one go, so with one shared socket the first worker
awake takes most of a client's connection pool; ``SO_REUSEPORT`` balances them by
the kernel's hash. The supervisor holds the port with a bound socket that never
listens (it gets no connections), so a worker restarted later binds it again, and
``--port 0`` is chosen once for all.

Freshness: a token read from any worker is honoured by every worker. A worker asked
``at_least`` a version it has not applied re-reads the index at once and then every
``POLL`` seconds, and worker 0 tells the others after every batch it applies (a byte
on a pipe each), so a waiting request is answered as soon as the batch is on disk.
A request for the head of the stream (OpenFGA's ``HIGHER_CONSISTENCY``) answered by
another worker asks worker 0 where that head is, on a socket pair of its own
(``leopard.http.headlink``), and waits until it has reached it.

Lifecycle: SIGTERM or SIGINT to the supervisor is passed on to every worker as
SIGTERM (uvicorn finishes what it serves, the consumer persists the batch in hand);
workers still running after ``STOP_TIMEOUT`` are killed. A worker never outlives the
supervisor (``PR_SET_PDEATHSIG``). A worker that dies after it was serving is
started again in its place (worker 0 with the consumer, which resumes from the
offsets stored with the index); a worker that ends before it serves (a bad index, a
busy port), or more than ``RESTART_LIMIT`` restarts within ``RESTART_WINDOW`` seconds,
stop the server: every worker is stopped and ``serve`` raises ``ServiceError``.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from leopard.core.lifetime import die_with_parent
from leopard.errors import InvalidInput, LeopardError, ServiceError
from leopard.http import workerprocess as process
from leopard.http.headlink import head_pair

__all__ = [
    "MAX_WORKERS",
    "RESTART_LIMIT",
    "RESTART_WINDOW",
    "STOP_TIMEOUT",
    "ConnectionCounts",
    "Supervisor",
    "Worker",
    "default_workers",
]

log = logging.getLogger("leopard.http")

#: most workers one server runs (a typo like --workers 800 is refused, not obeyed)
MAX_WORKERS = 256
#: restarts of dead workers allowed within ``RESTART_WINDOW`` seconds before giving up
RESTART_LIMIT = 5
RESTART_WINDOW = 60.0
#: how long workers get to stop (the consumer's batch in hand, uvicorn's connections)
STOP_TIMEOUT = 75.0
#: how long a worker that is not serving yet gets to stop
START_STOP_TIMEOUT = 10.0
_HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class ConnectionCounts:
    """Open connections per worker, in memory every worker shares (mapped before the
    fork), so that ``--max-connections`` bounds the server, not each worker.

    Each worker writes only its own slot (from its event loop), and a slot is reset by
    the supervisor before a worker is started in it, so a worker that died leaves no
    count behind. Readers add the slots up: a sum that is off by a connection or two
    at the instant another worker accepts is fine for a bound on a crowd.
    """

    def __init__(self, slots: int) -> None:
        self._map = mmap.mmap(-1, 8 * slots)
        self._slots = memoryview(self._map).cast("q")

    def add(self, slot: int, n: int) -> None:
        self._slots[slot] += n

    def reset(self, slot: int) -> None:
        self._slots[slot] = 0

    def total(self) -> int:
        return sum(self._slots)


@dataclass
class Worker:
    """What a worker process is given: its place and the ways to its siblings."""

    slot: int
    count: int
    host: str
    port: int
    #: whether this worker runs the change consumer (worker 0, with a stream)
    consumer: bool
    connections: ConnectionCounts
    _ready: int  # write end of the pipe telling the supervisor this worker listens
    #: read end of the pipe on which the consumer worker says it applied a batch
    wake_fd: int | None = None
    #: write ends of the followers' pipes (the consumer worker's)
    _wake: list[int] = field(default_factory=list)
    #: this worker's end of the socket on which it asks the consumer worker for the
    #: head of the stream (``leopard.http.headlink``)
    head_fd: int | None = None
    #: the consumer worker's ends of those sockets, one per other worker
    tell_head: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"worker {self.slot} of {self.count}"

    def listen(self, backlog: int = 2048) -> socket.socket:
        """This worker's listening socket on the server's address (``SO_REUSEPORT``)."""
        sock = _socket(self.host)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((self.host, self.port))
            sock.listen(backlog)
        except OSError as exc:
            sock.close()
            raise InvalidInput(
                f"{self.name} cannot listen on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from None
        return sock

    def ready(self) -> None:
        """Tell the supervisor this worker listens (called once)."""
        process.serving()
        with contextlib.suppress(OSError):
            os.write(self._ready, b"1")
            os.close(self._ready)

    def applied(self) -> None:
        """Tell the other workers a batch was applied (the consumer thread calls it)."""
        for fd in self._wake:
            # a full pipe already holds a wake-up not yet read: nothing is lost
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(fd, b"!")


def _socket(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (``port`` 0: a free one), never listening, that
    workers may bind beside with ``SO_REUSEPORT``.

    It is first bound without ``SO_REUSEPORT``, so that an address another server
    listens on (even one with ``SO_REUSEPORT`` of the same user, which the kernel would
    let us join) is refused rather than shared.
    """
    probe = _socket(host)
    try:
        probe.bind((host, port))
        port = probe.getsockname()[1]
        held = _socket(host)
        try:
            held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            probe.close()
            held.bind((host, port))
        except OSError:
            held.close()
            raise
    except OSError as exc:
        raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    finally:
        probe.close()
    return held


#: a worker's exit status after it printed why it could not serve (a LeopardError)
_SAID_WHY = 3


@dataclass
class _Slot:
    pid: int = 0
    ready: bool = False
    ready_fd: int = -1


class Supervisor:
    """Runs ``count`` workers of ``target`` on ``host:port`` until a signal (see the
    module docstring); ``on_listening`` is called with the URL once every worker listens.
    """

    def __init__(
        self,
        count: int,
        target: Callable[[Worker], None],
        *,
        host: str,
        port: int,
        consumer: bool,
        on_listening: Callable[[str], None] | None = None,
    ) -> None:
        if not 1 <= count <= MAX_WORKERS:
            raise InvalidInput(f"workers must be 1 to {MAX_WORKERS}, not {count!r}")
        self.count = count
        self.target = target
        self.host = host
        self.port = port
        self.consumer = consumer
        self.on_listening = on_listening
        self._slots = [_Slot() for _ in range(count)]
        self._stopping: int | None = None  # the signal that asked to stop
        self._restarts: list[float] = []
        self._selector: selectors.BaseSelector | None = None
        self._signal_r = self._signal_w = -1
        self._held: socket.socket | None = None
        self._wakes: list[tuple[int, int]] = []  # a pipe per follower worker
        self._heads: list[tuple[int, int]] = []  # a socket pair per follower worker
        self.connections = ConnectionCounts(count)

    # -- the supervisor ------------------------------------------------------------------

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT; ServiceError when a worker cannot serve."""
        self._held = reserve_port(self.host, self.port)
        self.port = self._held.getsockname()[1]
        if self.consumer:
            for _ in range(self.count - 1):
                r, w = os.pipe()
                os.set_blocking(r, False)
                os.set_blocking(w, False)
                self._wakes.append((r, w))
                self._heads.append(head_pair())
        self._selector = selectors.DefaultSelector()
        self._signal_r, self._signal_w = os.pipe()
        os.set_blocking(self._signal_r, False)
        os.set_blocking(self._signal_w, False)
        self._selector.register(self._signal_r, selectors.EVENT_READ)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _HANDLED}
        old_wakeup = signal.set_wakeup_fd(self._signal_w)
        failure: str | None = None
        try:
            for slot in range(self.count):
                self._start(slot)
            failure = self._watch()
        finally:
            self._stop_all()
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._close()
        if failure == "":
            raise SystemExit(1)
        if failure is not None:
            raise ServiceError(failure)

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGCHLD:
            return  # the wake-up fd has woken the loop: it reaps
        if self._stopping is None:
            self._stopping = signum
            self._signal_all(signal.SIGTERM)
        else:  # asked again: uvicorn then stops without waiting for its connections
            self._signal_all(signal.SIGINT)

    def _signal_all(self, sig: int) -> None:
        for s in self._slots:
            if s.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(s.pid, sig)

    def _watch(self) -> str | None:
        """Until a stop signal: note workers that listen, restart those that die.
        Returns why the server must stop ("" when a worker has said it), or None
        after a signal."""
        assert self._selector is not None
        announced = False
        while self._stopping is None:
            for key, _ in self._selector.select(timeout=1.0):
                fd = int(key.fd)
                if fd == self._signal_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(fd, 4096)
                    continue
                self._ready(fd)
            for pid, status in self._reap():
                slot = next((i for i, s in enumerate(self._slots) if s.pid == pid), None)
                if slot is None or self._stopping is not None:
                    continue
                was_ready = self._slots[slot].ready
                self._forget(slot)
                what = f"worker {slot} (pid {pid}) ended ({process.how(status)})"
                if not was_ready:
                    if os.WIFEXITED(status) and os.waitstatus_to_exitcode(status) == _SAID_WHY:
                        return ""  # its one line said why: nothing to add
                    return f"{what} before it served; the other workers were stopped"
                now = time.monotonic()
                self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW]
                if len(self._restarts) >= RESTART_LIMIT:
                    return (
                        f"{what}, after {len(self._restarts)} restarts within "
                        f"{RESTART_WINDOW:g} s; the other workers were stopped"
                    )
                self._restarts.append(now)
                print(f"leopard: {what}; starting it again", file=sys.stderr, flush=True)
                self._start(slot)
            if not announced and all(s.ready for s in self._slots):
                announced = True
                if self.on_listening is not None:
                    shown = f"[{self.host}]" if ":" in self.host else self.host
                    self.on_listening(f"http://{shown}:{self.port}")
        return None

    def _ready(self, fd: int) -> None:
        assert self._selector is not None
        try:
            data = os.read(fd, 16)
        except BlockingIOError:
            return
        for s in self._slots:
            if s.ready_fd == fd:
                s.ready = s.ready or bool(data)
                self._selector.unregister(fd)
                os.close(fd)
                s.ready_fd = -1

    def _reap(self) -> Iterator[tuple[int, int]]:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            yield pid, status

    def _forget(self, slot: int) -> None:
        s = self._slots[slot]
        if s.ready_fd >= 0 and self._selector is not None:
            self._selector.unregister(s.ready_fd)
            os.close(s.ready_fd)
        self._slots[slot] = _Slot()

    def _start(self, slot: int) -> None:
        assert self._selector is not None
        self.connections.reset(slot)
        ready_r, ready_w = os.pipe()
        consumer = self.consumer and slot == 0
        worker = Worker(
            slot=slot,
            count=self.count,
            host=self.host,
            port=self.port,
            consumer=consumer,
            connections=self.connections,
            _ready=ready_w,
            wake_fd=self._wakes[slot - 1][0] if self.consumer and slot > 0 else None,
            _wake=[w for _, w in self._wakes] if consumer else [],
            head_fd=self._heads[slot - 1][1] if self.consumer and slot > 0 else None,
            tell_head=[t for t, _ in self._heads] if consumer else [],
        )
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        # Signals wait until each side has the handlers it should have.
        signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child (tests see it as a process)
            os.close(ready_r)
            self._in_worker(worker, parent)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED)
        os.close(ready_w)
        self._slots[slot] = _Slot(pid=pid, ready_fd=ready_r)
        self._selector.register(ready_r, selectors.EVENT_READ)

    def _stop_all(self) -> None:
        """SIGTERM every worker (again: harmless), wait, then kill what remains."""
        self._signal_all(signal.SIGTERM)
        started = time.monotonic()
        while any(s.pid for s in self._slots):
            for pid, _ in self._reap():
                for i, s in enumerate(self._slots):
                    if s.pid == pid:
                        self._forget(i)
            waited = time.monotonic() - started
            for s in self._slots:
                # one not serving yet runs no consumer: it has nothing to finish
                if s.pid and waited > (STOP_TIMEOUT if s.ready else START_STOP_TIMEOUT):
                    log.warning("worker (pid %d) still running after %g s: killed", s.pid, waited)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(s.pid, signal.SIGKILL)
            time.sleep(0.02)

    def _close(self) -> None:
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        for fd in (self._signal_r, self._signal_w, *self._pipes()):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wakes = []
        self._heads = []
        if self._held is not None:
            self._held.close()
            self._held = None

    def _pipes(self) -> Iterator[int]:
        """The descriptors between workers: wake-up pipes and head sockets."""
        for pair in (*self._wakes, *self._heads):
            yield from pair

    # -- a worker ------------------------------------------------------------------------

    def _in_worker(self, worker: Worker, parent: int) -> None:  # pragma: no cover - child
        """Run ``target`` in the forked child, then exit it (never returns)."""
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            # Until uvicorn takes them over (and again after, when it re-raises the
            # signal it stopped on), a stop signal unwinds the worker cleanly.
            signal.signal(signal.SIGTERM, process.stop_worker)
            signal.signal(signal.SIGINT, process.stop_worker)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED)
            die_with_parent()
            if os.getppid() != parent:  # the supervisor died before the line above
                os._exit(1)
            keep = {worker._ready, *worker._wake, *worker.tell_head}
            keep.update(fd for fd in (worker.wake_fd, worker.head_fd) if fd is not None)
            if self._selector is not None:
                self._selector.close()
            for fd in (self._signal_r, self._signal_w, *self._pipes()):
                if fd not in keep:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            for s in self._slots:
                if s.ready_fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(s.ready_fd)
            if self._held is not None:
                self._held.close()
            self.target(worker)
            code = 0
        except KeyboardInterrupt:  # _Stop too: asked to stop
            code = 0
        except LeopardError as exc:
            print(f"Error: {worker.name}: {exc}", file=sys.stderr)
            code = _SAID_WHY
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            process.flush()
            os._exit(code)
