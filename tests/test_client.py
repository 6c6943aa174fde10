"""``leopard.client.Client`` answers like ``Index`` and raises the same errors.

Against a real server (uvicorn in a thread, a real port; the helpers come from
test_http): every method is compared with the local ``Index`` over the same
directory, every error class is provoked, and the connection handling (keep-alive,
a server that closed the idle connection, one that is not there) is exercised.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.http import TOKEN, TUPLES, build_small_index, running_server

import leopard
import leopard.client.base
from ingest.kafka.local_broker import free_port
from leopard import Index, InvalidInput, InvalidTuple, LeopardError, StaleIndex, StorageError
from leopard.client import Client, ServiceError, Unauthorized
from leopard.errors import HTTP_ERRORS, error_for_code
from leopard.http.app import LeopardService
from leopard.model.tokens import encode_token

SUBJECTS = sorted({t.split("@", 1)[1] for t in TUPLES} | {"user:stranger", "group:eng#member"})
GROUPS = sorted({t.split("#", 1)[0] for t in TUPLES} | {"group:none"})


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Index]:
    path = build_small_index(tmp_path_factory.mktemp("client") / "idx")
    with leopard.open_index(path) as ix:
        yield ix


@pytest.fixture(scope="module")
def url(index: Index) -> Iterator[str]:
    # a short keep-alive, so that a test can outlive it
    with running_server(LeopardService(index, max_batch=8), timeout_keep_alive=1) as base:
        yield base


@pytest.fixture
def client(url: str) -> Iterator[Client]:
    with Client(url, batch_size=8) as c:
        yield c


def test_answers_match_the_index(client: Client, index: Index) -> None:
    pairs = list(itertools.product(SUBJECTS, GROUPS))
    assert [client.check(s, g) for s, g in pairs] == [index.check(s, g) for s, g in pairs]
    # more pairs than one request may carry: sent in batches of 8, in order
    assert client.check_many(pairs) == index.check_many(pairs)
    assert client.check_many([]) == []
    for s in SUBJECTS:
        assert client.groups_of(s) == index.groups_of(s)
    for g in GROUPS:
        assert client.members_of(g) == index.members_of(g)
        for s in SUBJECTS:
            assert client.explain(s, g) == index.explain(s, g)
    assert client.version == index.version
    assert client.position == index.position
    assert client.last_token == index.version


def test_members_paging_matches_the_index(
    client: Client, index: Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(leopard.client.base, "MAX_PAGE", 4)  # force many pages
    assert client.members_of("group:big") == index.members_of("group:big")
    for limit, after in [(0, None), (3, None), (10, "user:m05"), (100, "user:m20"), (5, "user:z")]:
        assert client.members_of("group:big", limit, after) == index.members_of(
            "group:big", limit, after
        ), (limit, after)
    page = client.members_page("group:big", limit=10)
    assert page.members == index.members_of("group:big", 10)
    assert page.next == page.members[-1] and page.token == index.version


def test_errors_are_the_index_errors(client: Client, index: Index) -> None:
    for call in (
        lambda ix: ix.check("alice", "group:eng"),
        lambda ix: ix.check("user:alice", "group:"),
        lambda ix: ix.groups_of("user:a#B@d"),
        lambda ix: ix.check_many([("user:a", "group:eng"), ("nope", "group:eng")]),
        lambda ix: ix.explain("user:alice", "eng"),
        lambda ix: ix.members_of("bad group"),
    ):
        with pytest.raises(InvalidTuple) as local:
            call(index)
        with pytest.raises(InvalidTuple) as remote:
            call(client)
        assert str(remote.value) == str(local.value)
    with pytest.raises(InvalidInput) as local_err:
        index.check("user:a", "group:eng#owner")
    with pytest.raises(InvalidInput) as remote_err:
        client.check("user:a", "group:eng#owner")
    assert str(remote_err.value) == str(local_err.value)
    with pytest.raises(InvalidInput, match="garbage"):
        client.check("user:a", "group:eng", at_least="garbage")
    with pytest.raises(InvalidInput, match="max_wait"):
        client.check("user:a", "group:eng", at_least=index.version, max_wait=31)
    with pytest.raises(InvalidInput, match="limit"):
        client.members_of("group:big", -1)


def test_stale_carries_the_current_token(client: Client, index: Index) -> None:
    future = encode_token({"changes:0": 10**9})
    with pytest.raises(StaleIndex) as exc:
        client.check("user:alice", "group:eng", at_least=future, max_wait=0.1)
    assert exc.value.current == index.version
    with pytest.raises(StaleIndex):
        client.wait_for(future, timeout=0.1)
    with pytest.raises(StaleIndex):
        client.check_many([("user:alice", "group:eng")], at_least=future, max_wait=0)
    assert client.wait_for(index.version) == index.version
    assert client.check("user:alice", "group:eng", at_least=index.version) is True


def test_unauthorized(index: Index) -> None:
    with running_server(LeopardService(index, auth_token=TOKEN)) as base:
        with Client(base, token=TOKEN) as good:
            assert good.check("user:alice", "group:eng") is True
        for token in (None, "wrong"):
            with Client(base, token=token) as bad:
                with pytest.raises(Unauthorized) as exc:
                    bad.check("user:alice", "group:eng")
                assert isinstance(exc.value, PermissionError)
                assert isinstance(exc.value, LeopardError)
                assert exc.value.status == 401


def test_keep_alive_and_reconnect(client: Client) -> None:
    assert client.check("user:alice", "group:eng")
    first = client._conn
    assert client.check("user:bob", "group:eng")
    assert client._conn is first  # the same connection, kept alive
    time.sleep(1.5)  # the server drops idle connections after 1 s
    assert client.check("user:alice", "group:eng")  # resent on a new connection


def test_shared_between_threads(client: Client, index: Index) -> None:
    pairs = list(itertools.product(SUBJECTS, GROUPS))
    expected = index.check_many(pairs)
    failures: list[str] = []

    def work() -> None:
        if [client.check(s, g) for s, g in pairs] != expected:
            failures.append("wrong answers")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_no_server_is_a_service_error() -> None:
    with Client(f"http://127.0.0.1:{free_port()}", timeout=2) as c:
        with pytest.raises(ServiceError, match="cannot reach"):
            c.check("user:a", "group:b")


def test_the_client_loads_nothing_heavy() -> None:
    """An application imports the client alone: no Arrow, RocksDB or server beside it."""
    code = "import sys, leopard.client; print(sorted(sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    for heavy in ("pyarrow", "rocksdict", "uvicorn", "prometheus_client", "kafka"):
        assert f"'{heavy}'" not in loaded, heavy


def test_bad_base_url() -> None:
    for bad in ("127.0.0.1:8080", "ftp://host", "http://"):
        with pytest.raises(InvalidInput):
            Client(bad)


def test_a_prefix_in_the_base_url_is_kept(url: str, index: Index) -> None:
    with Client(url + "/") as c:  # a trailing slash is harmless
        assert c.version == index.version
    with Client(url + "/behind/a/proxy") as c:
        with pytest.raises(ServiceError) as exc:
            c.version  # noqa: B018 - the property makes the request
        assert exc.value.status == 404 and exc.value.code == "not_found"


class _BrokenIndex(Index):
    """An index whose storage fails: the one fake here, to reach the 500 path."""

    def check(self, subject: str, group: str) -> bool:
        raise RuntimeError("the disk is on fire")


def test_server_faults_are_500_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = build_small_index(tmp_path / "idx")
    with _BrokenIndex(path) as ix, running_server(LeopardService(ix)) as base:
        with Client(base) as c:
            with pytest.raises(ServiceError) as exc:
                c.check("user:alice", "group:eng")
            assert exc.value.status == 500 and exc.value.code == "internal"
            assert "on fire" not in str(exc.value)  # details stay in the server's log
            assert c.groups_of("user:alice")  # the server carries on
    assert any("the disk is on fire" in (r.exc_text or "") for r in caplog.records)


class _FailingIndex(Index):
    """An index whose ``check`` raises the error it is given (``None``: answers)."""

    error: LeopardError | None = None

    def check(self, subject: str, group: str) -> bool:
        if self.error is not None:
            raise self.error
        return super().check(subject, group)


def test_every_error_of_the_table_comes_back_as_its_class(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The server answers each error class with the status and code of HTTP_ERRORS; the
    client turns the code back into the class, with the server's message."""
    path = build_small_index(tmp_path / "idx")
    with _FailingIndex(path) as ix, running_server(LeopardService(ix)) as base:
        with Client(base) as c:
            for cls, (status, code) in HTTP_ERRORS.items():
                message = f"{cls.__name__} raised by the index"
                ix.error = cls(message)
                # the class the code stands for (InvalidConfig shares InvalidInput's)
                expected = error_for_code(code)
                assert expected is not None and HTTP_ERRORS[expected] == (status, code)
                with pytest.raises(expected) as exc:
                    c.check("user:alice", "group:eng")
                assert message in str(exc.value), cls
                if isinstance(exc.value, ServiceError):
                    assert (exc.value.status, exc.value.code) == (status, code), cls
            ix.error = None
            assert c.check("user:alice", "group:eng") is True  # the server carries on
    # a failing store is a 503 that names what failed, not a 500, and is logged
    assert HTTP_ERRORS[StorageError] == (503, "storage_error")
    assert any("StorageError raised by the index" in r.getMessage() for r in caplog.records)
