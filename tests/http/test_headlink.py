"""The head of the stream asked across workers (``leopard.http.headlink``), in one
process: a socket pair as the supervisor makes it, a teller with a stand-in head (the
real one is ``stream_head``, run for real by ``test_workers``)."""

from __future__ import annotations

import asyncio
import os
from types import SimpleNamespace
from typing import Any

import pytest

from leopard.errors import StaleIndex
from leopard.http.headlink import HeadLink, HeadTeller, head_pair


def run(coro: Any) -> Any:
    return asyncio.run(coro)


INDEX: Any = SimpleNamespace(version="v7")


def test_the_head_is_asked_as_of_each_question() -> None:
    teller_fd, link_fd = head_pair()
    heads = iter([{"t:0": 3}, {"t:0": 5, "t:1": 1}])
    asked: list[float] = []

    async def head_of(timeout: float) -> dict[str, int]:
        asked.append(timeout)
        await asyncio.sleep(0.01)
        return next(heads)

    async def main() -> list[dict[str, int]]:
        teller = HeadTeller([teller_fd], head_of)
        teller.start()
        link = HeadLink(link_fd, INDEX)
        try:
            return [await link(2.0), await link(1.5)]
        finally:
            link.close()
            teller.stop()

    assert run(main()) == [{"t:0": 3}, {"t:0": 5, "t:1": 1}]
    assert asked == [2.0, 1.5]


def test_questions_at_once_each_get_their_own_answer() -> None:
    teller_fd, link_fd = head_pair()

    async def head_of(timeout: float) -> dict[str, int]:
        await asyncio.sleep(timeout / 100)  # answered out of order
        return {"t:0": int(timeout * 10)}

    async def main() -> list[dict[str, int]]:
        teller = HeadTeller([teller_fd], head_of)
        teller.start()
        link = HeadLink(link_fd, INDEX)
        try:
            return list(await asyncio.gather(*(link(t) for t in (3.0, 1.0, 2.0))))
        finally:
            link.close()
            teller.stop()

    assert run(main()) == [{"t:0": 30}, {"t:0": 10}, {"t:0": 20}]


def test_a_head_not_known_is_stale_with_the_tellers_reason() -> None:
    teller_fd, link_fd = head_pair()

    async def head_of(timeout: float) -> dict[str, int]:
        raise StaleIndex("the change consumer is not running: disk full", "v9")

    async def main() -> None:
        teller = HeadTeller([teller_fd], head_of)
        teller.start()
        link = HeadLink(link_fd, INDEX)
        try:
            await link(1.0)
        finally:
            link.close()
            teller.stop()

    with pytest.raises(StaleIndex, match="not running: disk full") as caught:
        run(main())
    assert caught.value.current == "v7"  # the asking worker's own version


def test_no_answer_within_the_wait_is_stale() -> None:
    """Worker 0 is being started again: nobody reads the question in time."""
    teller_fd, link_fd = head_pair()

    async def main() -> None:
        link = HeadLink(link_fd, INDEX)
        try:
            await link(0.1)
        finally:
            link.close()

    with pytest.raises(StaleIndex, match="worker 0 did not answer within 0.1 s"):
        run(main())
    # the question waits in the socket for worker 0; the answer to it is dropped later
    assert os.read(teller_fd, 1 << 16).startswith(b'{"id": ')


def test_an_answer_that_is_no_head_is_not_taken_for_one() -> None:
    teller_fd, link_fd = head_pair()

    async def main() -> None:
        link = HeadLink(link_fd, INDEX)
        task = asyncio.ensure_future(link(2.0))
        await asyncio.sleep(0.05)
        question = os.read(teller_fd, 1 << 16)
        qid = question.split(b'"id": ')[1].split(b",")[0]
        os.write(teller_fd, b"not json")
        os.write(teller_fd, b'{"id": ' + qid + b', "head": {"t:0": "7"}}')
        try:
            await task
        finally:
            link.close()

    with pytest.raises(StaleIndex, match="worker 0 answered no head"):
        run(main())
