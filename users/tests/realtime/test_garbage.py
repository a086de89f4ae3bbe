"""users.realtime.garbage: a full collection once as many sockets closed as are open (and at
least COLLECT_AFTER_CLOSES), none while sockets open or stay open."""

import asyncio

from users.realtime import garbage
from users.realtime.garbage import COLLECT_AFTER_CLOSES, CollectClosedSockets


def test_a_full_collection_follows_as_many_closes_as_sockets_are_open(monkeypatch):
    assert COLLECT_AFTER_CLOSES == 500  # the figures below
    collections = []  # the sockets open at each collection
    monkeypatch.setattr(garbage.gc, "collect", lambda: collections.append(CollectClosedSockets.open))
    monkeypatch.setattr(CollectClosedSockets, "open", 0)
    monkeypatch.setattr(CollectClosedSockets, "closed", 0)
    released = {}

    async def socket(scope, receive, send):  # a socket's life, until the test ends it
        released[scope["n"]] = asyncio.Event()
        await released[scope["n"]].wait()
        if scope["n"] % 2:
            raise ConnectionResetError  # one that ends in an error counts too

    middleware = CollectClosedSockets(socket)

    async def lives():
        tasks = [asyncio.create_task(middleware({"n": n}, None, None)) for n in range(1500)]

        async def close(numbers):
            for n in numbers:
                released[n].set()
                await asyncio.gather(tasks[n], return_exceptions=True)

        await asyncio.sleep(0)
        assert CollectClosedSockets.open == 1500 and collections == []  # opening collects nothing
        await close(range(1000, 1500))
        assert collections == []  # 500 closed, 1,000 still open
        await close(range(1000))

    asyncio.run(lives())
    # 750 closed while 750 were open; then 500 (the least) while 250 were; the last 250 wait.
    assert collections == [750, 250]
    assert (CollectClosedSockets.open, CollectClosedSockets.closed) == (0, 250)
