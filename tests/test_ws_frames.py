"""The server frames text, binary and Ping frames itself (once, for every client).
A real WebSocket parser (wsproto's client side) must read them back exactly."""

import pytest
import wsproto
from wsproto.events import AcceptConnection, BytesMessage, Ping, Request, TextMessage

from sensorstream.server.ws import Framer, ws_binary_frame, ws_ping_frame, ws_text_frame


def _client_reading(data: bytes) -> list:
    """A wsproto client past its handshake, fed `data` as if from the server."""
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    req = client.send(Request(host="x", target="/ws"))
    server = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    server.receive_data(req)
    assert isinstance(next(server.events()), Request)
    accept = server.send(AcceptConnection())
    client.receive_data(accept)
    assert isinstance(next(client.events()), AcceptConnection)
    client.receive_data(data)
    return list(client.events())


@pytest.mark.parametrize("n", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_text_and_binary_frames_of_every_length_class(n):
    text = ("é" * n)[:n]  # multi-byte UTF-8: the length field counts bytes, not characters
    evs = _client_reading(ws_text_frame(text) + ws_binary_frame(b"\x07" * n))
    texts = "".join(e.data for e in evs if isinstance(e, TextMessage))
    blobs = b"".join(e.data for e in evs if isinstance(e, BytesMessage))
    assert texts == text and blobs == b"\x07" * n


def test_ping_frame():
    (ev,) = _client_reading(ws_ping_frame(b"\x00" * 7 + b"\x05"))
    assert isinstance(ev, Ping) and ev.payload == b"\x00" * 7 + b"\x05"
    with pytest.raises(ValueError):
        ws_ping_frame(b"x" * 126)


def test_framer_frames_a_notice_once_for_every_client():
    """The hub hands the same notice (str) to every client in turn: one framing."""
    framer = Framer()
    notice = '{"type": "stream_removed", "key": 3}'
    wire = framer.text(notice)
    assert all(framer.text(notice) is wire for _ in range(3))
    (ev,) = _client_reading(wire)
    assert isinstance(ev, TextMessage) and ev.data == notice
    other = framer.text("é")
    assert other is not wire and _client_reading(other)[0].data == "é"
