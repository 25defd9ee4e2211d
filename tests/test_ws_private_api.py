"""sensorstream writes pre-framed bytes through private trio-websocket attributes
(see sensorstream/server/ws.py: send_preframed and DirectWriter, which also swaps
`_stream_lock` for its own lock). If a trio-websocket release renames or changes them,
this fails loudly instead of the server breaking quietly."""

import trio
import trio.testing
import trio_websocket
import wsproto
from wsproto.events import BytesMessage

from sensorstream.server.ws import send_preframed, ws_binary_frame


async def accept(nursery, server_end, client_end):
    """A trio-websocket server connection and a bare wsproto client over the given
    pair of streams, past the handshake."""
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    await client_end.send_all(client.send(wsproto.events.Request(host="x", target="/ws")))
    req = await trio_websocket.wrap_server_stream(nursery, server_end)
    ws = await req.accept()
    client.receive_data(await client_end.receive_some())
    assert isinstance(next(client.events()), wsproto.events.AcceptConnection)
    return ws, client


async def accept_over_memory(nursery):
    server_end, client_end = trio.testing.memory_stream_pair()
    ws, client = await accept(nursery, server_end, client_end)
    return ws, client, client_end


def test_private_attributes_still_exist():
    src = trio_websocket.WebSocketConnection.__init__.__code__.co_names
    assert "_stream" in src and "_stream_lock" in src and "_wsproto" in src and "_pings" in src
    assert callable(getattr(trio_websocket.WebSocketConnection, "_send", None))


async def test_trio_socket_close_closes_the_stdlib_socket_direct_writes_use():
    """DirectWriter writes to the stdlib socket inside trio's, and relies on trio's
    close() closing that very object (its fileno() then reads -1)."""
    import socket

    a, b = socket.socketpair()
    ts = trio.socket.from_stdlib_socket(a)
    assert ts._sock is a
    ts.close()
    assert a.fileno() == -1
    b.close()


async def test_start_ping_is_resolved_by_trio_websockets_pong_handling(nursery):
    """start_ping puts our Pong where ws.ping() puts its Event; the library's reader
    must still call .set() on it when the peer's Pong arrives."""
    from sensorstream.server.ws import Pong, start_ping

    ws, client, client_end = await accept_over_memory(nursery)
    pong = Pong()
    await start_ping(ws, pong)
    assert not pong.is_set()
    client.receive_data(await client_end.receive_some())
    ping = next(e for e in client.events() if isinstance(e, wsproto.events.Ping))
    await client_end.send_all(client.send(ping.response()))
    with trio.fail_after(5):
        while not pong.is_set():
            await trio.testing.wait_all_tasks_blocked()
    assert pong.answered
    nursery.cancel_scope.cancel()


async def test_preframed_bytes_arrive_as_one_binary_message(nursery):
    server_end, client_end = trio.testing.memory_stream_pair()

    async def accept():
        req = await trio_websocket.wrap_server_stream(nursery, server_end)
        return await req.accept()

    # Client side written with bare wsproto, so both ends are independent of trio-websocket's client.
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    await client_end.send_all(client.send(wsproto.events.Request(host="x", target="/ws")))
    ws = await accept()
    client.receive_data(await client_end.receive_some())
    assert isinstance(next(client.events()), wsproto.events.AcceptConnection)
    for payload in (b"x" * 10, b"y" * 300, b"z" * 70000):
        await send_preframed(ws, ws_binary_frame(payload))
        got = b""
        while True:
            client.receive_data(await client_end.receive_some())
            evs = [e for e in client.events() if isinstance(e, BytesMessage)]
            got += b"".join(e.data for e in evs)
            if len(got) >= len(payload):
                break
        assert got == payload
    nursery.cancel_scope.cancel()  # the client never answers a close handshake


# ----------------------------------------------------------------- DirectWriter (deliver's direct socket writes)

import inspect  # noqa: E402
import socket  # noqa: E402

from sensorstream.server.ws import DirectWriter  # noqa: E402


def test_stream_lock_is_only_used_as_an_async_context_manager():
    """DirectWriter installs itself as `_stream_lock`. That is only sound while
    trio-websocket creates it once and otherwise only does `async with self._stream_lock`
    (no acquire/release pairs, no `locked()` checks, no other holder), and writes only via
    `self._stream.send_all` inside that block."""
    src = inspect.getsource(trio_websocket._impl)
    uses = [line.strip() for line in src.splitlines() if "_stream_lock" in line]
    assert uses == ["self._stream_lock = trio.StrictFIFOLock()", "async with self._stream_lock:"], uses
    send = inspect.getsource(trio_websocket.WebSocketConnection._send)
    assert "async with self._stream_lock:" in send and "await self._stream.send_all(data)" in send
    writes = [line.strip() for line in src.splitlines() if "_stream.send_all" in line]
    assert writes == ["await self._stream.send_all(data)"], writes
    assert isinstance(trio_websocket.WebSocketConnection.closed, property)


async def _tcp_ws_pair(nursery):
    """A trio-websocket server connection over real TCP on 127.0.0.1, and a bare wsproto client."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client_end = await trio.open_tcp_stream("127.0.0.1", port)
    server_end = await listeners[0].accept()
    for ln in listeners:
        await ln.aclose()
    ws, client = await accept(nursery, server_end, client_end)
    return ws, server_end, client, client_end


async def test_direct_writer_does_not_attach_to_non_tcp_streams(nursery):
    server_end, client_end = trio.testing.memory_stream_pair()
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    await client_end.send_all(client.send(wsproto.events.Request(host="x", target="/ws")))
    ws = await (await trio_websocket.wrap_server_stream(nursery, server_end)).accept()
    assert DirectWriter.attach(ws) is None  # e.g. TLS: frames take the queue and send_preframed
    nursery.cancel_scope.cancel()


async def test_cut_short_direct_write_is_completed_before_trio_websockets_own_writes(nursery):
    """Fill the socket with direct writes until one is cut short mid-frame, while the
    client's Pings make trio-websocket want to write Pongs: every frame must still
    arrive whole, in order, and the Pongs must come after the completed frame."""
    ws, server_end, client, client_end = await _tcp_ws_pair(nursery)
    server_end.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    client_end.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    direct = DirectWriter.attach(ws)
    assert direct is not None and ws._stream_lock is direct
    direct.idle = True
    payloads = []
    with trio.fail_after(5):
        while direct.partial is None:
            p = bytes([len(payloads) % 251]) * 3000
            n = direct.write(ws_binary_frame(p))
            if n == 0:  # socket full exactly at a frame boundary: not the case under test, keep going
                await trio.sleep(0.01)
                continue
            payloads.append(p)
    assert direct.write(ws_binary_frame(b"x")) == 0  # gate held: no more direct writes
    # Pings now: the reader task answers with Pongs, which must wait for the gate.
    await client_end.send_all(client.send(wsproto.events.Ping(b"p1")) + client.send(wsproto.events.Ping(b"p2")))
    with trio.fail_after(5):
        while direct.waiting == 0:
            await trio.sleep(0.01)

    got: list = []

    async def read():
        while sum(isinstance(e, BytesMessage) and e.message_finished for e in got) < len(payloads) or sum(isinstance(e, wsproto.events.Pong) for e in got) < 2:
            client.receive_data(await client_end.receive_some(65536))
            got.extend(client.events())  # raises if the framing were broken

    async with trio.open_nursery() as inner:
        inner.start_soon(read)
        await direct.flush()
    # wsproto hands a message over in pieces as bytes arrive: join them back.
    msgs, part = [], b""
    for e in got:
        if isinstance(e, BytesMessage):
            part += e.data
            if e.message_finished:
                msgs.append(part)
                part = b""
        elif isinstance(e, wsproto.events.Pong):
            msgs.append("pong")
    assert [m for m in msgs if m != "pong"] == payloads
    # Both Pongs came after the last (completed) frame.
    assert msgs[len(payloads):] == ["pong", "pong"]
    assert direct.free and direct.ok and direct.partial is None
    nursery.cancel_scope.cancel()


async def test_released_handshake_leaves_a_working_connection(nursery):
    """release_handshake drops wsproto's h11 state and trio-websocket's copy of the
    request headers. The connection must still read, write, ping and close."""
    from sensorstream.server.ws import release_handshake

    ws, client, client_end = await accept_over_memory(nursery)
    release_handshake(ws)
    assert ws._wsproto.handshake._h11_connection is None and ws.handshake_headers == ()

    await client_end.send_all(client.send(wsproto.events.TextMessage(data="hi")))
    await client_end.send_all(client.send(wsproto.events.Ping(payload=b"p")))
    assert await ws.get_message() == "hi"
    await ws.send_message("back")
    got = []
    while not any(isinstance(e, wsproto.events.TextMessage) for e in got) or not any(isinstance(e, wsproto.events.Pong) for e in got):
        client.receive_data(await client_end.receive_some())
        got += list(client.events())
    assert [e.data for e in got if isinstance(e, wsproto.events.TextMessage)] == ["back"]
    await client_end.send_all(client.send(wsproto.events.CloseConnection(code=1000)))
    with trio.fail_after(5):
        while ws.closed is None:
            await trio.testing.wait_all_tasks_blocked()
    assert ws.closed.code == 1000
    nursery.cancel_scope.cancel()


async def test_direct_writer_as_the_stream_lock_is_fifo_and_blocks_direct_writes(nursery):
    """DirectWriter is the connection's write lock. While anyone holds it no direct
    write goes out; waiters get it in arrival order, handed over (never free in
    between, so a direct write cannot slip in); a cancelled waiter is skipped."""
    ws, server_end, client, client_end = await _tcp_ws_pair(nursery)
    direct = DirectWriter.attach(ws)
    assert direct is not None and DirectWriter.attach(ws) is direct
    frame = ws_binary_frame(b"x")
    order: list[str] = []
    release = {n: trio.Event() for n in "axbc"}
    scopes = {n: trio.CancelScope() for n in "axbc"}

    async def hold(name: str):
        with scopes[name]:
            async with ws._stream_lock:
                order.append(name)
                assert not direct.free and not direct.ok and direct.write(frame) == 0
                await release[name].wait()

    async def settle(cond):
        with trio.fail_after(5):
            while not cond():
                await trio.testing.wait_all_tasks_blocked()

    nursery.start_soon(hold, "a")
    await settle(lambda: order == ["a"])
    for n in "xbc":
        nursery.start_soon(hold, n)
        await settle(lambda: direct.waiting == "xbc".index(n) + 1)
    scopes["x"].cancel()  # gives up while waiting
    await settle(lambda: direct.waiting == 2)
    release["a"].set()
    await settle(lambda: order == ["a", "b"])
    release["b"].set()
    await settle(lambda: order == ["a", "b", "c"])
    release["c"].set()
    await settle(lambda: direct.free)
    assert direct.ok and direct.write(frame) == len(frame)
    client.receive_data(await client_end.receive_some(65536))
    assert [e.data for e in client.events()] == [b"x"]
    nursery.cancel_scope.cancel()


async def test_no_direct_write_after_trio_websocket_sent_its_close_frame(nursery):
    ws, server_end, client, client_end = await _tcp_ws_pair(nursery)
    direct = DirectWriter.attach(ws)
    assert direct.ok
    nursery.start_soon(ws.aclose, 1001, "bye")
    client.receive_data(await client_end.receive_some(65536))
    close = next(client.events())
    assert isinstance(close, wsproto.events.CloseConnection) and close.code == 1001
    with trio.fail_after(5):
        while not direct.free:
            await trio.testing.wait_all_tasks_blocked()
    assert not direct.ok and direct.write(ws_binary_frame(b"late")) == 0
    await client_end.send_all(client.send(close.response()))
    with trio.fail_after(5):
        while ws.closed is None:
            await trio.testing.wait_all_tasks_blocked()
    nursery.cancel_scope.cancel()
