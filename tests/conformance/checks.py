"""The /ws checks of the conformance run: what the echo server cannot show.

Against a real `sensorstream serve` (the /ws session, not the echo one):
- a text message one byte over --max-message-bytes is closed with 1009;
- a binary message from a client gets the documented `binary_not_supported`
  error, and the connection stays usable.
Each returns a list of problems (empty: the check passed).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..server_thread import Closed, SyncClient, client_frame
from .procs import Child, python_module

MAX_MESSAGE = 4096


def too_large_text_gets_1009(port: int, max_message: int = MAX_MESSAGE) -> list[str]:
    c = SyncClient(port)
    try:
        # The ping behind it is answered only if the big message was taken.
        c.send(client_frame(b"x" * (max_message + 1)))
        c.send(client_frame(json.dumps({"type": "ping", "ref": "after-big"}).encode()))
        while True:
            op, payload = c.recv_frame()
            if op == 1 and json.loads(payload).get("type") in ("error", "pong"):
                return [f"a {max_message + 1}-byte text message was answered ({payload[:80]!r}), not closed with 1009"]
    except Closed as e:
        return [] if e.code == 1009 else [f"a {max_message + 1}-byte text message was closed with {e.code}, not 1009"]
    finally:
        c.sock.close()


def binary_message_gets_error(port: int) -> list[str]:
    c = SyncClient(port)
    try:
        c.send(client_frame(b"\x00\x01binary", opcode=2))
        c.send(client_frame(json.dumps({"type": "ping", "ref": "after-binary"}).encode()))
        texts, _ = c.until_pong("after-binary")
        errors = [m for m in texts if m.get("type") == "error"]
        if [m.get("code") for m in errors] != ["binary_not_supported"]:
            return [f"a binary message got {errors!r}, not one binary_not_supported error"]
        return []
    except Closed as e:
        return [f"a binary message closed the connection ({e.code}) instead of an error reply"]
    finally:
        c.close()


def ws_checks(workdir: Path) -> list[str]:
    argv = python_module("sensorstream", "serve", "--port", "0", "--max-message-bytes", str(MAX_MESSAGE),
                         "--heartbeat", "60", "--log-level", "info")
    with Child("sensorstream-serve", argv, workdir / "serve.log") as srv:
        return too_large_text_gets_1009(srv.port) + binary_message_gets_error(srv.port)
