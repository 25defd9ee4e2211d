"""sensorstream writes pre-framed bytes through two private trio-websocket attributes
(see sensorstream/server/ws.py: send_preframed). If a trio-websocket release renames
or changes them, this fails loudly instead of the server breaking quietly."""

import trio
import trio.testing
import trio_websocket
import wsproto
from wsproto.events import BytesMessage

from sensorstream.server.ws import send_preframed, ws_binary_frame


def test_private_attributes_still_exist():
    src = trio_websocket.WebSocketConnection.__init__.__code__.co_names
    assert "_stream" in src and "_stream_lock" in src and "_wsproto" in src


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
