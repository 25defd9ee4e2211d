"""The WebSocket layer of the server, one concept per module:

- frames.py: RFC 6455 framing of what we send, once per message for every client
- handshake.py: the opening handshake on the request the HTTP front door parsed
- connection.py: our server connection on wsproto's public API (reading loop,
  write lock, ping/pong, close handshake, direct socket writes)
- keeper.py: liveness and heartbeats of every session, one task and one heap
- outbox.py: one client's queue policy, without I/O
- session.py: one client: subscriptions, control-message dispatch, its sender
- control.py: commands to devices (the `command` handler, who may send)
- tick.py: one write per client per tick
"""

from .connection import ConnectionClosed, ServerConnection
from .frames import Framed, Framer, ws_binary_frame, ws_frame, ws_ping_frame, ws_text_frame
from .handshake import HandshakeError, accept_headers, accept_response
from .keeper import Keeper, Pong
from .outbox import History, Outbox
from .session import HANDLERS, ClientSession, CloseSession, SessionContext, handles
from .control import CommandRights, rights_for  # noqa: E402 -- registers the `command` handler
from .tick import Tick

__all__ = [
    "ClientSession", "CloseSession", "CommandRights", "rights_for", "ConnectionClosed", "Framed", "Framer", "HANDLERS", "HandshakeError", "History",
    "Keeper", "Outbox", "Pong", "ServerConnection", "SessionContext", "Tick", "accept_headers", "accept_response", "handles", "ws_binary_frame",
    "ws_frame", "ws_ping_frame", "ws_text_frame",
]
