"""ZedTokens decoded as SpiceDB does, ordered by revision, and read as index positions.

The reference encoder here is protobuf's own: SpiceDB's ``impl.v1.DecodedZedToken``
message (``proto/impl/v1/impl.proto`` in authzed/spicedb) is declared at run time in a
descriptor pool and serialized by the protobuf runtime, so the hand-written wire
decoder in ``leopard.model.zedtoken`` is checked against an independent encoder.
Tokens captured from SpiceDB embedded 0.7.1 (memory datastore) are decoded too.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from hypothesis import given
from hypothesis import strategies as st

from leopard.errors import InvalidInput
from leopard.model.tokens import encode_token, wanted_position
from leopard.model.zedtoken import (
    SPICEDB_KEY,
    ZedToken,
    decode_zedtoken,
    encode_zedtoken,
    revision_number,
    zedtoken_position,
)

# written by SpiceDB embedded 0.7.1 for a WriteRelationships and a ReadSchema
REAL = {
    "Gh8KEzE3OTU2NjU4MjU4NjcwNjc1ODgSCGNkYjBkY2E0": ZedToken("1795665825867067588", "cdb0dca4"),
    "Gh8KEzE3OTU2NjU4MjU4NjgyMDM0OTUSCGNkYjBkY2E0": ZedToken("1795665825868203495", "cdb0dca4"),
}


def _reference_type() -> Any:
    """SpiceDB's DecodedZedToken, declared from its .proto text, in its own pool."""
    f = descriptor_pb2.FileDescriptorProto(name="impl_test.proto", package="impl.v1")
    f.syntax = "proto3"
    top = f.message_type.add(name="DecodedZedToken")
    zookie = top.nested_type.add(name="V1Zookie")
    zookie.field.add(name="revision", number=1, type=4, label=1)  # uint64
    v1 = top.nested_type.add(name="V1ZedToken")
    v1.field.add(name="revision", number=1, type=9, label=1)  # string
    v1.field.add(name="datastore_unique_id_prefix", number=2, type=9, label=1)
    v1.field.add(name="schema_hash", number=3, type=12, label=1)  # bytes
    top.oneof_decl.add(name="version_oneof")
    for name, number, type_name in (
        ("deprecated_v1_zookie", 2, ".impl.v1.DecodedZedToken.V1Zookie"),
        ("v1", 3, ".impl.v1.DecodedZedToken.V1ZedToken"),
    ):
        top.field.add(
            name=name, number=number, type=11, label=1, type_name=type_name, oneof_index=0
        )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("impl.v1.DecodedZedToken"))


DECODED = _reference_type()


def reference_token(revision: str, prefix: str = "", schema_hash: bytes = b"") -> str:
    m = DECODED()
    m.v1.revision = revision
    m.v1.datastore_unique_id_prefix = prefix
    m.v1.schema_hash = schema_hash
    return base64.b64encode(m.SerializeToString()).decode()


def test_real_tokens() -> None:
    for token, expected in REAL.items():
        assert decode_zedtoken(token) == expected
        d = expected
        assert encode_zedtoken(d.revision, d.datastore_prefix, d.schema_hash) == token


REVISIONS = st.one_of(
    st.integers(1, 2**63 - 1).map(str),
    st.tuples(st.integers(0, 2**63 - 1), st.integers(0, 10**10 - 1)).map(
        lambda p: f"{p[0]}.{p[1]:010d}"
    ),
    st.text(min_size=1, max_size=60),
)


@given(REVISIONS, st.text(max_size=8), st.binary(max_size=40))
def test_agrees_with_protobufs_own_encoder(revision: str, prefix: str, schema_hash: bytes) -> None:
    token = reference_token(revision, prefix, schema_hash)
    assert decode_zedtoken(token) == ZedToken(revision, prefix, schema_hash)
    assert encode_zedtoken(revision, prefix, schema_hash) == token


def test_legacy_zookie() -> None:
    m = DECODED()
    m.deprecated_v1_zookie.revision = 1234567
    token = base64.b64encode(m.SerializeToString()).decode()
    assert decode_zedtoken(token) == ZedToken("1234567")


def test_unknown_fields_are_skipped() -> None:
    m = DECODED()
    m.v1.revision = "42"
    raw = m.SerializeToString()
    # field 9 varint, field 10 fixed64, field 11 fixed32, field 12 bytes: all unknown
    extra = b"\x48\x05" + b"\x51" + b"\0" * 8 + b"\x5d" + b"\0" * 4 + b"\x62\x02ab"
    token = base64.b64encode(extra + raw).decode()
    assert decode_zedtoken(token).revision == "42"


def test_missing_padding_is_accepted() -> None:
    token = reference_token("17")
    assert decode_zedtoken(token.rstrip("=")).revision == "17"


@pytest.mark.parametrize(
    ("token", "match"),
    [
        ("", r"'' is not a SpiceDB ZedToken \(expected base64 text\)"),
        ("not base64!", r"not base64"),
        (base64.b64encode(b"\x1a\x05\x0a\x03").decode(), r"runs past the end"),
        (base64.b64encode(b"\x1a\x02\x0a\x00").decode(), r"holds no revision"),
        (base64.b64encode(b"\x0f").decode(), r"wire type 7"),
        (base64.b64encode(b"\x08\xff").decode(), r"truncated or overlong varint"),
        (base64.b64encode(b"\x1a\x03\x0a\x01\xff").decode(), r"not UTF-8"),
        (base64.b64encode(b"").decode() or "AA", r"field number 0|holds no revision"),
    ],
)
def test_not_a_zedtoken(token: str, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        decode_zedtoken(token)


def test_integer_revisions_order_as_integers() -> None:
    assert revision_number("1795665825867067588") == 1795665825867067588
    assert revision_number("9") < revision_number("10")


def test_hlc_revisions_order_as_clocks() -> None:
    # CockroachDB: <nanoseconds>.<10-digit logical clock>
    a = revision_number("1700000000000000000.0000000000")
    b = revision_number("1700000000000000000.0000000001")
    c = revision_number("1700000000000000001.0000000000")
    assert a < b < c
    # a short logical part is padded on the right, as SpiceDB's parser does
    assert revision_number("5.1") == revision_number("5.1000000000")


@pytest.mark.parametrize(
    "revision",
    [
        "CAIQAxgD",  # a PostgreSQL snapshot revision (base64 of a protobuf)
        "1.2.3",
        "-4",
        "1.12345678901",
    ],
)
def test_revisions_that_cannot_be_ordered(revision: str) -> None:
    with pytest.raises(InvalidInput, match="PostgreSQL's snapshot revisions"):
        revision_number(revision)


def test_positions_from_tokens() -> None:
    token = reference_token("1795665825867067588", "cdb0dca4")
    assert zedtoken_position(token) == {SPICEDB_KEY: 1795665825867067588}
    assert wanted_position(token) == {SPICEDB_KEY: 1795665825867067588}
    leopard = encode_token({"changes:0": 5, SPICEDB_KEY: 7})
    assert wanted_position(leopard) == {"changes:0": 5, SPICEDB_KEY: 7}
    with pytest.raises(InvalidInput, match=r"'zz' is neither a Leopard version token"):
        wanted_position("zz")
    with pytest.raises(InvalidInput, match=r"is not a valid Leopard version token"):
        wanted_position("v1.!!")
