"""Change-event codecs: Kafka message values in, tuple touches and deletes out.

The incremental layer consumes tuple changes, but the systems that write them speak
different dialects: Leopard's own JSON (``native``), OpenFGA's ReadChanges items
(``openfga``), SpiceDB's Watch responses (``spicedb``) and Debezium change-data-capture
envelopes of a tuple table (``debezium``), one module each. Each codec turns one
message value into a list of ``Change`` (a SpiceDB Watch response or a Debezium update
carries several), so that the consumer loop never knows which dialect it reads.

A message of several items (a Watch response, a ReadChanges page) may hold one bad
item among good ones: ``decode_message`` returns the good changes with each bad item
``Rejected`` alone (its index, its reason, and a message of the same format holding
just it), so the consumer applies the rest and dead-letters that item; ``decode``,
for callers that take a message whole or not at all, refuses it at its first bad item.

A malformed message raises ``DecodeError`` with a one-line reason that names the bad
value; the consumer adds topic, partition and offset and sends the message to its
dead-letter topic. A bad *codec configuration* (unknown format, unknown option) raises
plain ``InvalidInput`` instead: that is the operator's mistake, not the message's, and
must stop the consumer rather than dead-letter every message.

Every change of one tuple must go to one partition so that its changes stay in order;
``message_key`` is the key that guarantees it for the native format.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ingest.codecs.debezium import DEBEZIUM_COLUMNS, check_options, decode_debezium
from ingest.codecs.fields import Change, Decoded, Rejected, load_json
from ingest.codecs.native import decode_native, decode_plain, encode_native, message_key
from ingest.codecs.openfga import decode_openfga
from ingest.codecs.spicedb import decode_spicedb
from leopard.errors import DecodeError, InvalidInput, StreamGap

__all__ = [
    "CODECS",
    "DEBEZIUM_COLUMNS",
    "Change",
    "DecodeError",
    "Decoded",
    "Rejected",
    "check_codec_options",
    "decode",
    "decode_message",
    "encode_native",
    "message_key",
]

log = logging.getLogger("leopard.consumer")

CODECS = ("native", "openfga", "spicedb", "debezium")

_DECODERS: dict[str, Callable[[dict[str, Any], dict[str, str]], Decoded]] = {
    "native": decode_native,
    "openfga": decode_openfga,
    "spicedb": decode_spicedb,
    "debezium": decode_debezium,
}


def decode(format: str, value: bytes | None, *, options: dict | None = None) -> list[Change]:
    """Decode one message value of the given format into its changes, in order.

    A Debezium tombstone (``None`` or empty value, sent after each delete for log
    compaction) holds no change and decodes to ``[]``; in the other formats an empty
    message is malformed. A message with a bad item is refused whole (``DecodeError``
    naming the first); ``decode_message`` keeps its good items.
    """
    decoded = decode_message(format, value, options=options)
    if decoded.rejected:
        raise DecodeError(decoded.rejected[0].reason)
    return decoded.changes


def decode_message(format: str, value: bytes | None, *, options: dict | None = None) -> Decoded:
    """Decode one message value into its good changes, in order, and its bad items.

    ``DecodeError`` when the message as a whole is malformed (not JSON, no list of
    items, a stream error); a bad item alone is ``Decoded.rejected``, its reason
    prefixed like a ``DecodeError``'s (``spicedb event: updates[2]...``). Whatever else
    a codec raises on a message it was not written for is a ``DecodeError`` too, naming
    the exception: such a message goes to the dead-letter topic like any undecodable
    one, never stopping the stream at it on every restart.
    """
    if format not in _DECODERS:
        raise InvalidInput(f"unknown change format {format!r}; expected one of {CODECS}")
    opts = check_codec_options(format, options)
    if format == "native" and value:
        changes = decode_plain(value)
        if changes is not None:
            return tuple.__new__(Decoded, (changes, (), None))  # Decoded(changes), sooner
    try:
        if not value:
            if format == "debezium":
                return Decoded([])
            raise DecodeError("the message is empty")
        decoded = _DECODERS[format](load_json(value), opts)
    except DecodeError as exc:
        raise DecodeError(f"{format} event: {exc}") from None
    except (MemoryError, StreamGap):
        raise  # the machine's state, not the message's; a stream that must stop here
    except Exception as exc:  # a message no codec rule foresaw
        log.error("%s event not decodable (%s: %s)", format, type(exc).__name__, exc)
        raise DecodeError(
            f"{format} event: cannot be decoded ({type(exc).__name__}: {exc})"
        ) from None
    if decoded.rejected:
        rejected = tuple(r._replace(reason=f"{format} event: {r.reason}") for r in decoded.rejected)
        decoded = decoded._replace(rejected=rejected)
    return decoded


def check_codec_options(format: str, options: dict | None) -> dict[str, str]:
    """The options of change format ``format``, checked (InvalidInput naming a bad one)."""
    if not options:
        return {}
    if format != "debezium":
        raise InvalidInput(f"the {format} change format takes no options, got {sorted(options)}")
    return check_options(options)
