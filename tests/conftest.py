from __future__ import annotations

import pytest
import trio

from sensorstream.config import ServerConfig
from sensorstream.server.app import Server


@pytest.fixture
def make_server(nursery):
    """Start an in-process server on a free port of 127.0.0.1 inside the test's nursery."""

    async def start(**overrides) -> Server:
        overrides.setdefault("port", 0)
        overrides.setdefault("host", "127.0.0.1")
        server = Server(ServerConfig(**overrides))
        await nursery.start(server.run)
        return server

    return start


async def eventually(predicate, *, timeout: float = 5.0, poll: float = 0.005):
    """Wait for a condition that no event announces (e.g. bytes on a socket elsewhere),
    with a hard deadline. Used sparingly: prefer waiting on the event itself."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(poll)
