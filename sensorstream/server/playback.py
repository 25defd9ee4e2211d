"""The `playback` control message: pause, resume, seek and speed of a replay.

Only a server started by `sensorstream replay` has a replay to control; any
other answers `not_replay`. Every change is also sent to every client (ref
null, see recording/cli.py), so all dashboards show the same timeline.
"""

from __future__ import annotations

from .. import protocol


def answer(replay, req: protocol.Playback) -> str:
    """The reply to one playback message (raises ProtocolError for the session to send)."""
    if replay is None:
        raise protocol.ProtocolError("not_replay", "this server is not replaying a recording (see `sensorstream replay`)", req.ref)
    if req.action == "pause":
        state = replay.pause()
    elif req.action == "resume":
        state = replay.resume()
    elif req.action == "seek":
        state = replay.seek(req.t)
    elif req.action == "speed":
        state = replay.set_speed(req.speed)
    else:
        state = replay.state()
    return protocol.playback_state(req.ref, state)
