"""kafka-python, imported once for the whole project: with a clear message when the
``[kafka]`` extra is missing, and so that it works under ``-W error``.

kafka-python 3.0 calls the deprecated ``importlib.resources.read_text``/``open_text``
while being imported; with warnings as errors (as pytest runs here) the import fails.
Every module of this project imports Kafka names from here.
"""

from __future__ import annotations

import logging
import warnings

try:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"(read|open)_text is deprecated", DeprecationWarning)
        from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
        from kafka.admin import KafkaAdminClient
        from kafka.errors import (
            CorruptRecordError,
            KafkaError,
            KafkaTimeoutError,
            MessageSizeTooLargeError,
            OffsetOutOfRangeError,
        )
        from kafka.structs import OffsetAndMetadata
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    raise ModuleNotFoundError(
        "reading or writing a change stream needs kafka-python: pip install 'leopard-index[kafka]'",
        name=exc.name,
    ) from exc


def _not_a_closed_socket(record: logging.LogRecord) -> bool:
    """Drop kafka-python's traceback of a read racing its own close.

    kafka-python 3.0's transport can wake to read a socket that ``close`` (a consumer
    or producer stopping) has just set to None; it logs the AttributeError with a
    traceback, then aborts the connection it was closing anyway. Nothing is lost, but
    a clean shutdown must not print a traceback.
    """
    exc = record.exc_info[1] if record.exc_info else None
    return not (
        isinstance(exc, AttributeError) and "'NoneType' object has no attribute 'recv'" in str(exc)
    )


logging.getLogger("kafka.net.transport").addFilter(_not_a_closed_socket)

__all__ = [
    "ConsumerRebalanceListener",
    "CorruptRecordError",
    "KafkaAdminClient",
    "KafkaConsumer",
    "KafkaError",
    "KafkaProducer",
    "KafkaTimeoutError",
    "MessageSizeTooLargeError",
    "OffsetAndMetadata",
    "OffsetOutOfRangeError",
    "TopicPartition",
]
