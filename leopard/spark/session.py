"""A SparkSession for one build: quiet, watched, and its errors turned into Leopard's.

Why each piece:

* pyspark is optional (the ``[spark]`` extra): it is imported here, on first use, and
  its absence is one clear ``InvalidInput`` rather than an ImportError from deep inside.
* Spark talks a lot on the JVM's stderr (log4j, "Setting default log level", the JDK's
  incubator-module notice) from the moment its JVM starts. The JVM and every Python
  worker it forks inherit the file descriptors of the moment the gateway starts, so
  those are pointed at a log file for that moment (``spark.log``, named in errors);
  log4j is set to ERROR so the file stays short.
* An error of Leopard's raised in an executor reaches the driver as a Java exception
  wrapping a Python traceback. ``task_errors`` (executor side) writes its class and
  message between markers; ``driver_errors`` finds them and raises the same class on
  the driver, so a bad record is reported as ``FILE:LINE: reason``, as one machine does.
* Progress: a thread polls Spark's status tracker and reports each stage's finished
  tasks through ``on_progress``.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from leopard import errors
from leopard.errors import InvalidInput, LeopardError

__all__ = [
    "NEEDS_PYSPARK",
    "driver_errors",
    "pyspark_modules",
    "spark_session",
    "stage_progress",
    "task_errors",
]

NEEDS_PYSPARK = "the Spark engine needs pyspark: pip install 'leopard-index[spark]'"
_MARK = "<<leopard-error>>"
_FOUND = re.compile(
    re.escape(_MARK) + r"(\w+)" + re.escape(_MARK) + r"(.*?)" + re.escape(_MARK), re.S
)

_LOG4J = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
logger.repl.name = org.apache.spark.repl.Main
logger.repl.level = error
"""


def pyspark_modules() -> tuple[Any, Any]:
    """``(pyspark.sql.SparkSession, pyspark.sql.functions)``; InvalidInput when pyspark
    is not installed."""
    try:
        from pyspark.sql import SparkSession
        from pyspark.sql import functions as F
    except ImportError:
        raise InvalidInput(NEEDS_PYSPARK) from None
    return SparkSession, F


@contextlib.contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """File descriptors 1 and 2 pointed at ``log`` (for a child started meanwhile)."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (*saved, fd):
            os.close(f)


@contextlib.contextmanager
def spark_session(master: str, session: Any = None, app: str = "leopard build") -> Iterator[Any]:
    """A SparkSession on ``master``, stopped at the end; or ``session`` as it is (the
    caller's to stop). Spark's output goes to a ``spark.log`` in a temporary directory."""
    SparkSession, _ = pyspark_modules()
    if session is not None:
        yield session
        return
    logs = Path(tempfile.mkdtemp(prefix="leopard-spark-"))
    props = logs / "log4j2.properties"
    props.write_text(_LOG4J)
    log = logs / "spark.log"
    builder = (
        SparkSession.builder.master(master)
        .appName(app)
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{props}")
        # the workers run this interpreter, which has leopard (a cluster's executors need
        # leopard installed, with the [spark] extra, in the Python they are told to use)
        .config("spark.pyspark.python", os.environ.get("PYSPARK_PYTHON", sys.executable))
        # Arrow batches of a useful size between the JVM and the Python workers
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(1 << 16))
    )
    if master.startswith("local"):
        builder = builder.config("spark.ui.enabled", "false")
    try:
        with _output_to(log):
            spark = builder.getOrCreate()
    except Exception as exc:
        raise InvalidInput(
            f"cannot start Spark on --master {master!r}: {exc} (see {log})"
        ) from None
    spark.sparkContext.setLogLevel("ERROR")
    try:
        yield spark
    finally:
        spark.stop()


@contextlib.contextmanager
def task_errors() -> Iterator[None]:
    """In an executor: a LeopardError leaves as a RuntimeError that says its class and
    message between markers, for ``driver_errors``."""
    try:
        yield
    except LeopardError as exc:
        raise RuntimeError(f"{_MARK}{type(exc).__name__}{_MARK}{exc}{_MARK}") from None


@contextlib.contextmanager
def driver_errors(what: str) -> Iterator[None]:
    """On the driver: an executor's LeopardError raised again as itself; any other
    failure of Spark as InvalidInput saying what was being done."""
    try:
        yield
    except LeopardError:
        raise
    except Exception as exc:
        text = str(exc)
        found = _FOUND.search(text)
        if found:
            cls = getattr(errors, found.group(1), None)
            if not (isinstance(cls, type) and issubclass(cls, LeopardError)):
                cls = InvalidInput
            raise cls(found.group(2)) from None
        first = next((line for line in text.splitlines() if line.strip()), type(exc).__name__)
        raise InvalidInput(f"Spark failed while {what}: {first.strip()[:500]}") from None


@contextlib.contextmanager
def stage_progress(
    spark: Any, on_progress: Callable[[str], None] | None, every: float = 0.5
) -> Iterator[None]:
    """Report ``stage S: done/total tasks`` through ``on_progress`` while the body runs."""
    if on_progress is None:
        yield
        return
    tracker = spark.sparkContext.statusTracker()
    stop = threading.Event()
    said: dict[int, tuple[int, int]] = {}

    def poll() -> None:
        while not stop.wait(every):
            with contextlib.suppress(Exception):  # the context may be stopping
                for sid in tracker.getActiveStageIds():
                    info = tracker.getStageInfo(sid)
                    if info is None:
                        continue
                    now = (info.numCompletedTasks, info.numTasks)
                    if said.get(sid) != now:
                        said[sid] = now
                        on_progress(f"stage {sid}: {now[0]}/{now[1]} tasks")

    thread = threading.Thread(target=poll, name="leopard-spark-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
