"""Commands from a client to a device: the `command` handler and who may send.

What a connection may do is settled at the upgrade (`rights_for`): commands are
off unless the server allows them; with a control token, only a connection that
presented it may send. Each sending connection has its own token bucket
(`--command-rate`). The command itself goes to the stream's DevicePort through
the registry, which queues it without waiting; `command_sent` (or the error) is
sent when the port's writer is done with it, from that task.
"""

from __future__ import annotations

import trio

from ... import protocol
from ...commands.encoding import CommandError
from ...commands.registry import CommandRegistry
from ..security import TokenBucket, secret_matches
from .session import ClientSession, handles


class CommandRights:
    """One connection's permission to send, and its command rate limit."""

    __slots__ = ("allowed", "bucket")

    def __init__(self, allowed: bool, rate: float, burst: int):
        self.allowed = allowed
        self.bucket = TokenBucket(rate, burst, trio.current_time()) if allowed else None


def rights_for(registry: CommandRegistry, presented: str | None) -> CommandRights:
    p = registry.policy
    allowed = p.enabled and (p.control_token is None or secret_matches(presented, p.control_token))
    return CommandRights(allowed, p.rate, p.burst)


@handles(protocol.Command)
def _command(s: ClientSession, req: protocol.Command) -> None:
    registry = s.ctx.commands
    rights = s.control
    if registry is None or rights is None:
        raise protocol.ProtocolError("forbidden", "this server does not accept commands", req.ref)
    if rights.bucket is not None and not rights.bucket.take(trio.current_time(), 1):
        registry.count(req.stream, "rate_limited")
        raise protocol.ProtocolError("rate_limited", f"at most {registry.policy.rate:g} commands a second", req.ref)

    def done(code: str | None, n: int) -> None:
        if s.ended:
            return
        if code is None:
            s.reply(protocol.command_sent(req.ref, n))
        else:
            s.reply(protocol.error(req.ref, code, f"{req.stream} went away before the command was written"))

    try:
        registry.send(s.peer, req.stream, req.data, done, allowed=rights.allowed)
    except CommandError as e:
        raise protocol.ProtocolError(e.code, e.message, req.ref) from None
