"""Liveness and backpressure timing, on trio's MockClock (virtual time, exact, no waiting).

The server side is the real session code over in-memory streams; the client side is
bare wsproto that does the handshake and then misbehaves on purpose.
"""

import trio
import trio.testing
import wsproto
from wsproto.events import AcceptConnection, Request, TextMessage

from sensorstream.config import ServerConfig
from sensorstream.server.app import Server


async def handshake(client_end):
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    await client_end.send_all(client.send(Request(host="x", target="/ws")))
    while True:
        client.receive_data(await client_end.receive_some())
        evs = list(client.events())
        if any(isinstance(e, AcceptConnection) for e in evs):
            return client, evs


def start_session(nursery, server: Server, pair=trio.testing.memory_stream_pair):
    """Run one server session over an in-memory stream pair; returns the client end and
    an event set when the session has ended."""
    server_end, client_end = pair()
    done = trio.Event()
    nursery.start_soon(server.keeper.run)  # Server.run would start it

    async def serve():
        await server.handle_websocket(server_end, "mem")
        done.set()

    nursery.start_soon(serve)
    return client_end, done


async def handshake_then_stall(client_end):
    """Over lockstep streams (a write blocks until the peer reads, like a full TCP
    window): read the 101 and the hello, then never read again."""
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    await client_end.send_all(client.send(Request(host="x", target="/ws")))
    client.receive_data(await client_end.receive_some())  # the 101
    client.receive_data(await client_end.receive_some())  # hello


async def test_silent_client_closed_at_interval_plus_timeout(nursery, autojump_clock):
    server = Server(ServerConfig(ping_interval=5, ping_timeout=10, heartbeat_s=1000))
    client_end, done = start_session(nursery, server)
    await handshake(client_end)
    t0 = trio.current_time()
    await done.wait()  # the client never answers a ping
    assert trio.current_time() - t0 == 15
    assert server.stats.ping_timeouts_total == 1


async def test_responsive_client_is_kept(nursery, autojump_clock):
    server = Server(ServerConfig(ping_interval=5, ping_timeout=10, heartbeat_s=1000))
    client_end, _ = start_session(nursery, server)
    client, _ = await handshake(client_end)
    with trio.move_on_after(600):
        while True:  # answer pings (wsproto queues the pong reply for us)
            client.receive_data(await client_end.receive_some())
            for e in client.events():
                if isinstance(e, wsproto.events.Ping):
                    await client_end.send_all(client.send(e.response()))
    assert len(server.sessions) == 1 and server.stats.ping_timeouts_total == 0


async def test_heartbeat_every_interval_on_an_idle_connection(nursery, autojump_clock):
    server = Server(ServerConfig(ping_interval=1000, heartbeat_s=2.0))
    client_end, _ = start_session(nursery, server)
    client, evs = await handshake(client_end)
    times = []
    t0 = trio.current_time()
    while len(times) < 4:
        for e in evs:
            if isinstance(e, TextMessage) and '"heartbeat"' in e.data:
                times.append(trio.current_time() - t0)
        client.receive_data(await client_end.receive_some())
        evs = list(client.events())
    assert times == [2.0, 4.0, 6.0, 8.0]


async def test_blocked_writer_closed_after_send_timeout(nursery, autojump_clock):
    server = Server(ServerConfig(ping_interval=1000, heartbeat_s=0.5, send_timeout=10))
    client_end, done = start_session(nursery, server, trio.testing.lockstep_stream_pair)
    await handshake_then_stall(client_end)
    # Now stop reading. The next heartbeat write blocks; 10 s later the client is cut off.
    t0 = trio.current_time()
    await done.wait()
    assert trio.current_time() - t0 == 0.5 + 10
    assert server.stats.send_timeouts_total == 1


async def test_dead_peer_with_a_stuck_write_is_closed_at_interval_plus_timeout(nursery, autojump_clock):
    """The write blocks before any ping is out: the peer is still judged dead at
    ping_interval + ping_timeout, not after the (longer) send timeout."""
    server = Server(ServerConfig(ping_interval=5, ping_timeout=3, heartbeat_s=0.5, send_timeout=100))
    client_end, done = start_session(nursery, server, trio.testing.lockstep_stream_pair)
    await handshake_then_stall(client_end)
    t0 = trio.current_time()
    await done.wait()  # never reads again: the 0.5 s heartbeat write blocks
    assert trio.current_time() - t0 == 5 + 3
    assert server.stats.ping_timeouts_total == 1 and server.stats.send_timeouts_total == 0


async def test_pings_keep_their_interval_when_pongs_come_back(nursery, autojump_clock):
    server = Server(ServerConfig(ping_interval=5, ping_timeout=10, heartbeat_s=1000))
    client_end, _ = start_session(nursery, server)
    client, _ = await handshake(client_end)
    t0 = trio.current_time()
    pings = []
    while len(pings) < 4:
        client.receive_data(await client_end.receive_some())
        for e in client.events():
            if isinstance(e, wsproto.events.Ping):
                pings.append(trio.current_time() - t0)
                await client_end.send_all(client.send(e.response()))
    assert pings == [5, 10, 15, 20]
