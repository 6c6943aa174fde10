"""Change-event codecs: Kafka message values in, tuple touches and deletes out.

The incremental layer consumes tuple changes, but the systems that write them speak
different dialects: Leopard's own JSON (``native``), OpenFGA's ReadChanges items
(``openfga``), SpiceDB's Watch responses (``spicedb``) and Debezium change-data-capture
envelopes of a tuple table (``debezium``), one module each. Each codec turns one
message value into a list of ``Change`` (a SpiceDB Watch response or a Debezium update
carries several), so that the consumer loop never knows which dialect it reads.

A malformed message raises ``DecodeError`` with a one-line reason that names the bad
value; the consumer adds topic, partition and offset and sends the message to its
dead-letter topic. A bad *codec configuration* (unknown format, unknown option) raises
plain ``InvalidInput`` instead: that is the operator's mistake, not the message's, and
must stop the consumer rather than dead-letter every message.

Every change of one tuple must go to one partition so that its changes stay in order;
``message_key`` is the key that guarantees it for the native format.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ingest.codecs.debezium import DEBEZIUM_COLUMNS, check_options, decode_debezium
from ingest.codecs.fields import Change, load_json
from ingest.codecs.native import decode_native, decode_plain, encode_native, message_key
from ingest.codecs.openfga import decode_openfga
from ingest.codecs.spicedb import decode_spicedb
from leopard.errors import DecodeError, InvalidInput

__all__ = [
    "CODECS",
    "DEBEZIUM_COLUMNS",
    "Change",
    "DecodeError",
    "decode",
    "encode_native",
    "message_key",
]

CODECS = ("native", "openfga", "spicedb", "debezium")

_DECODERS: dict[str, Callable[[dict[str, Any], dict[str, str]], list[Change]]] = {
    "native": decode_native,
    "openfga": decode_openfga,
    "spicedb": decode_spicedb,
    "debezium": decode_debezium,
}


def decode(format: str, value: bytes | None, *, options: dict | None = None) -> list[Change]:
    """Decode one message value of the given format into its changes, in order.

    A Debezium tombstone (``None`` or empty value, sent after each delete for log
    compaction) holds no change and decodes to ``[]``; in the other formats an empty
    message is malformed.
    """
    if format not in _DECODERS:
        raise InvalidInput(f"unknown change format {format!r}; expected one of {CODECS}")
    opts = _check_options(format, options)
    if format == "native" and value:
        changes = decode_plain(value)
        if changes is not None:
            return changes
    try:
        if not value:
            if format == "debezium":
                return []
            raise DecodeError("the message is empty")
        return _DECODERS[format](load_json(value), opts)
    except DecodeError as exc:
        raise DecodeError(f"{format} event: {exc}") from None


def _check_options(format: str, options: dict | None) -> dict[str, str]:
    if not options:
        return {}
    if format != "debezium":
        raise InvalidInput(f"the {format} change format takes no options, got {sorted(options)}")
    return check_options(options)
