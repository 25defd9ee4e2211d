"""Liveness and backpressure timing, on trio's MockClock (virtual time, exact, no waiting).

The server side is the real session code over in-memory streams; the client side is
bare wsproto that does the handshake and then misbehaves on purpose.
"""

import pytest
import trio
import trio.testing
import wsproto
from wsproto.events import AcceptConnection, Request, TextMessage

from sensorstream.config import ServerConfig
from sensorstream.server.app import Server
from sensorstream.server.http import handle_http


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
    if not getattr(server, "_test_keeper_started", False):
        server._test_keeper_started = True
        nursery.start_soon(server.keeper.run)  # Server.run would start it
        server.nursery = nursery  # ...and own the sessions' sender tasks

    async def serve():
        await handle_http(server.http_context, server_end, "mem")
        done.set()

    nursery.start_soon(serve)
    return client_end, done


def socket_pair():
    import socket

    a, b = socket.socketpair()
    return trio.SocketStream(trio.socket.from_stdlib_socket(a)), trio.SocketStream(trio.socket.from_stdlib_socket(b))


async def answer_pings(client, client_end, count: int, t0: float) -> list[float]:
    """Answer the server's next `count` Pings; the times they arrived, from t0."""
    pings = []
    while len(pings) < count:
        client.receive_data(await client_end.receive_some())
        for e in client.events():
            if isinstance(e, wsproto.events.Ping):
                pings.append(trio.current_time() - t0)
                await client_end.send_all(client.send(e.response()))
    return pings


async def handshake_then_stall(client_end):
    """Over lockstep streams (a write blocks until the peer reads, like a full TCP
    window): read the 101 and the hello, then never read again."""
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    await client_end.send_all(client.send(Request(host="x", target="/ws")))
    evs: list = []
    while not any(isinstance(e, TextMessage) for e in evs):  # the 101, then the hello
        client.receive_data(await client_end.receive_some())
        evs += client.events()


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


@pytest.mark.parametrize("pair", [trio.testing.memory_stream_pair, socket_pair], ids=["via-sender", "direct"])
async def test_heartbeat_every_interval_on_an_idle_connection(nursery, autojump_clock, pair):
    server = Server(ServerConfig(ping_interval=1000, heartbeat_s=2.0))
    client_end, _ = start_session(nursery, server, pair)
    client, evs = await handshake(client_end)
    await server.wait_sessions(lambda s: len(s) == 1)
    (session,) = server.sessions
    # Over a socket the keeper writes heartbeats itself; memory streams take the sender.
    assert (session._direct is not None) == (pair is socket_pair)
    times = []
    t0 = trio.current_time()
    while len(times) < 4:
        for e in evs:
            if isinstance(e, TextMessage) and '"heartbeat"' in e.data:
                times.append(trio.current_time() - t0)
        client.receive_data(await client_end.receive_some())
        evs = list(client.events())
    assert times == [2.0, 4.0, 6.0, 8.0]
    if pair is socket_pair:
        assert not session._sender_running


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
    assert await answer_pings(client, client_end, 4, t0) == [5, 10, 15, 20]


# ----------------------------------------------------------------- the direct path, over real sockets
#
# Over memory streams (above) every ping and heartbeat goes through the sender
# task. Over a socket the keeper writes them straight to the socket (DirectWriter):
# the same timing must hold there. socketpair() data is readable the moment it is
# written, so the autojump clock stays exact.


async def test_direct_pings_keep_their_interval_then_a_silent_peer_is_closed(nursery, autojump_clock):
    server = Server(ServerConfig(ping_interval=5, ping_timeout=10, heartbeat_s=1000))
    client_end, done = start_session(nursery, server, socket_pair)
    client, _ = await handshake(client_end)
    await server.wait_sessions(lambda s: len(s) == 1)
    (session,) = server.sessions
    assert session._direct is not None  # the path under test
    t0 = trio.current_time()
    assert await answer_pings(client, client_end, 3, t0) == [5, 10, 15]
    assert not session._sender_running  # the keeper wrote them itself
    await done.wait()  # no more pongs: the ping at 20 goes unanswered
    assert trio.current_time() - t0 == 20 + 10
    assert server.stats.ping_timeouts_total == 1


async def test_keeper_pings_sessions_due_close_together_in_one_round(nursery, autojump_clock):
    """Sessions whose pings fall due within the keeper's slack share one wake-up:
    one round, not one per session (that was most of the idle CPU at 1,000 clients)."""
    server = Server(ServerConfig(ping_interval=5, ping_timeout=10, heartbeat_s=1000))
    clients = []
    for _ in range(20):
        client_end, _ = start_session(nursery, server, socket_pair)
        clients.append((client_end, (await handshake(client_end))[0]))
        await trio.sleep(0.004)  # 20 sessions over 80 ms, inside the 100 ms slack
    assert server.keeper.slack == 0.1
    rounds = server.keeper._round
    got = 0
    for client_end, client in clients:
        while True:
            client.receive_data(await client_end.receive_some())
            if any(isinstance(e, wsproto.events.Ping) for e in client.events()):
                got += 1
                break
    assert got == 20
    assert server.keeper._round == rounds + 1


async def test_nothing_starts_a_sender_once_a_session_is_ending(nursery, autojump_clock):
    """A keeper round can fall in the same instant as a send timeout: the session is
    being cancelled but has not unwound yet. A heartbeat owed then must not start a
    new sender (it would write on a stream whose last write was cut off)."""
    server = Server(ServerConfig(ping_interval=1000, heartbeat_s=1000))
    client_end, done = start_session(nursery, server, socket_pair)
    await handshake(client_end)
    await server.wait_sessions(lambda s: len(s) == 1)
    (session,) = server.sessions
    await trio.testing.wait_all_tasks_blocked()
    assert not session._sender_running  # direct writes: no sender while idle
    session.stop("test", 1000)
    session._kick()  # as an owed heartbeat or a cut-short write would, in the same instant
    assert not session._sender_running
    await done.wait()


async def test_keeper_heap_stays_bounded_under_churn(nursery, autojump_clock):
    """An ended session's heap entries would keep it (WebSocket, buffers) alive
    until its ping falls due. With a long ping interval and clients coming and
    going, that grew without bound in the interval (the churn test saw 19 MiB);
    the keeper now rebuilds its heap once dead entries outnumber live ones."""
    server = Server(ServerConfig(ping_interval=60, ping_timeout=10, heartbeat_s=1000))
    keeper = server.keeper
    stay = []
    for i in range(400):
        client_end, done = start_session(nursery, server)
        await handshake(client_end)
        if i % 10 == 0:
            stay.append(client_end)  # some stay connected throughout
            continue
        await client_end.aclose()
        await done.wait()
        live = len(server.sessions)
        assert len(keeper._heap) <= 4 * live + 2 * keeper.COMPACT_ABOVE + 2
    assert trio.current_time() < 60  # no entry came up on its own: only rebuilds dropped them
    assert len(server.sessions) == 40
    # Every live session kept both of its entries.
    kinds = {}
    for _, _, kind, s in keeper._heap:
        if not s.ended:
            kinds.setdefault(s, set()).add(kind)
    assert set(kinds) == set(server.sessions) and all(k == {0, 1} for k in kinds.values())


async def test_a_failing_sender_ends_its_session_not_the_server(nursery, autojump_clock, monkeypatch):
    """Sender tasks run in the server's nursery (no nursery per connection): an
    unexpected error in one must end that session with 1011, and leave the
    nursery, the server and the next session alone."""
    from sensorstream.server.ws.session import ClientSession

    server = Server(ServerConfig(ping_interval=1000, heartbeat_s=1000))
    real = ClientSession._send_text
    broken = []

    async def send_text(self, text):
        if not broken:
            broken.append(self)
            raise RuntimeError("a bug in the sender")
        await real(self, text)

    monkeypatch.setattr(ClientSession, "_send_text", send_text)
    first_end, first_done = start_session(nursery, server)
    client, _ = await handshake(first_end)
    # Over memory streams every reply goes through the sender task: this one fails.
    await first_end.send_all(client.send(TextMessage('{"type":"ping","ref":1}')))
    await first_done.wait()
    assert broken and broken[0].close_code == 1011 and broken[0].abort
    # The server (and the test's nursery) are still there: the next client is served.
    second_end, _ = start_session(nursery, server)
    client2, _ = await handshake(second_end)
    await second_end.send_all(client2.send(TextMessage('{"type":"ping","ref":2}')))
    got = []
    while not got:
        client2.receive_data(await second_end.receive_some())
        got = [e.data for e in client2.events() if isinstance(e, TextMessage) and '"pong"' in e.data]
    assert '"ref":2' in got[0]
