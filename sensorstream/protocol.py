"""Wire contract v1, sans-I/O: numpy arrays and dicts in, bytes and str out.

Nothing here touches a socket, so the whole contract is testable (and fuzzable)
without a server. docs/protocol.md is the prose version of this module; keep the
two in step.

Binary data frame (server -> client), little-endian, 24-byte header:

    u8 kind=1 | u8 flags | u16 n_channels C | u32 key | u32 n_samples N | u32 reserved=0 | u64 seq
    f64[N] timestamps (Unix seconds) | f32[C*N] values, channel-major

The header is 24 bytes so the f64 block starts 8-aligned and the f32 block
4-aligned: a browser can take zero-copy Float64Array/Float32Array views.
"""

from __future__ import annotations

import json
import math
import operator
import re
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

PROTOCOL_VERSION = 1

KIND_BATCH = 1
FLAG_REPLAYED = 0x01

HEADER = struct.Struct("<BBHIIIQ")
HEADER_SIZE = HEADER.size  # 24
assert HEADER_SIZE == 24

_F64 = np.dtype("<f8")
_F32 = np.dtype("<f4")

#: Largest control message (text frame) the server parses. Anything bigger is an
#: error without being decoded, so a client cannot make the server build a huge object.
MAX_CONTROL_BYTES = 64 * 1024
#: Deepest JSON nesting accepted in a control message.
MAX_JSON_DEPTH = 16
#: Most stream patterns one subscribe/unsubscribe may carry.
MAX_PATTERNS = 256
MAX_PATTERN_LEN = 256
#: Most channels one stream has (the hub refuses more; a client can size by it).
MAX_STREAM_CHANNELS = 1024


# --------------------------------------------------------------------------- catalog

# Stream statuses, in one place: sources, the hub, /healthz, /metrics and the
# dashboard all read them from here (docs/protocol.md, "Stream status").
LIVE = "live"  # samples arriving
STALE = "stale"  # live, but no sample for longer than staleness.stale_after(); live again with the next one
DISCONNECTED = "disconnected"  # the source lost its device (unplugged, port gone) and is retrying
FAILED = "failed"  # the source task died; `error` says why (it is restarted with backoff)
STREAM_STATUSES = (LIVE, STALE, DISCONNECTED, FAILED)
#: Statuses that make /healthz answer 503 at once (DISCONNECTED: after --unhealthy-after).
UNHEALTHY_AT_ONCE = (STALE, FAILED)


@dataclass(frozen=True, slots=True)
class Channel:
    name: str
    unit: str = ""

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "unit": self.unit}


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """One stream as the catalog and the wire describe it."""

    key: int
    id: str
    channels: tuple[Channel, ...]
    rate_hz: float | None = None
    status: str = LIVE  # one of STREAM_STATUSES
    device: str = ""  # groups streams in the dashboard; defaults to the id's prefix
    # Changes whenever the stream's history is lost (protocol.md, "Resume"): a
    # client's (epoch, seq) names one batch for as long as the epoch lasts.
    epoch: str = ""
    error: str | None = None  # why the stream is FAILED (a short human reason), else None
    commands: bool = False  # the source accepts commands (docs/protocol.md, "Commands")
    actions: tuple[dict[str, Any], ...] = ()  # the device profile's [[actions]]: buttons and sliders

    def to_json(self) -> dict[str, Any]:
        d = {
            "key": self.key,
            "id": self.id,
            "device": self.device or self.id.split("/", 1)[0],
            "channels": [c.to_json() for c in self.channels],
            "rate_hz": self.rate_hz,
            "status": self.status,
            "epoch": self.epoch,
            **({"error": self.error} if self.error is not None else {}),
        }
        if self.commands:  # only then: clients that predate commands see the same objects
            d["commands"] = True
            d["actions"] = list(self.actions)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "StreamInfo":
        return cls(
            key=int(d["key"]),
            id=str(d["id"]),
            channels=tuple(Channel(str(c["name"]), str(c.get("unit", ""))) for c in d["channels"]),
            rate_hz=None if d.get("rate_hz") is None else float(d["rate_hz"]),
            status=str(d.get("status", LIVE)),
            device=str(d.get("device", "")),
            epoch=str(d.get("epoch", "")),
            error=None if d.get("error") is None else str(d["error"]),
            commands=bool(d.get("commands", False)),
            actions=tuple(a for a in d.get("actions", ()) if isinstance(a, dict)),
        )


# --------------------------------------------------------------------------- binary batches


@dataclass(frozen=True, slots=True)
class Batch:
    """A decoded data frame. Arrays are read-only views into the frame's bytes."""

    key: int
    seq: int
    timestamps: np.ndarray  # float64, shape (N,)
    values: np.ndarray  # float32, shape (C, N)
    flags: int = 0

    @property
    def replayed(self) -> bool:
        return bool(self.flags & FLAG_REPLAYED)


class FrameError(ValueError):
    """A binary frame that does not follow the v1 layout."""


def encode_batch(key: int, seq: int, timestamps: np.ndarray, values: np.ndarray, flags: int = 0) -> bytes:
    """Encode one batch. Called once per batch, never per subscriber."""
    ts = np.ascontiguousarray(timestamps, dtype=_F64)
    vals = np.ascontiguousarray(values, dtype=_F32)
    if vals.ndim != 2 or ts.ndim != 1 or vals.shape[1] != ts.shape[0]:
        raise ValueError(f"shape mismatch: timestamps {ts.shape}, values {vals.shape}")
    c, n = vals.shape
    header = HEADER.pack(KIND_BATCH, flags, c, key, n, 0, seq)
    return b"".join((header, ts.data, vals.data))


def decode_batch(frame: bytes | bytearray | memoryview) -> Batch:
    """Decode a data frame into zero-copy numpy views."""
    if len(frame) < HEADER_SIZE:
        raise FrameError(f"frame of {len(frame)} bytes is shorter than the 24-byte header")
    kind, flags, c, key, n, _reserved, seq = HEADER.unpack_from(frame, 0)
    if kind != KIND_BATCH:
        raise FrameError(f"unknown frame kind {kind}")
    expected = HEADER_SIZE + 8 * n + 4 * c * n
    if len(frame) != expected:
        raise FrameError(f"frame is {len(frame)} bytes, header says {expected}")
    ts = np.frombuffer(frame, dtype=_F64, count=n, offset=HEADER_SIZE)
    vals = np.frombuffer(frame, dtype=_F32, count=c * n, offset=HEADER_SIZE + 8 * n).reshape(c, n)
    return Batch(key=key, seq=seq, timestamps=ts, values=vals, flags=flags)


def mark_replayed(frame: bytes | memoryview) -> bytes:
    """The same frame with the replayed-history flag set (a copy; history is capped)."""
    buf = bytearray(frame)
    buf[1] |= FLAG_REPLAYED
    return bytes(buf)


# --------------------------------------------------------------------------- server -> client text


# allow_nan=False: NaN is not JSON, and a browser's JSON.parse rejects it. One
# encoder for the process: json.dumps with any non-default argument builds a new
# one per call, a quarter of the cost of a short reply (heartbeats, hellos, acks).
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _dumps(obj: dict[str, Any]) -> str:
    return _ENCODER.encode(obj)


def hello(server: str, session: str, heartbeat_s: float, streams: list[StreamInfo], bus: bool | None = None) -> str:
    # Every connection gets one, and the catalog rarely changes between two: its
    # JSON (most of the message) is kept for as long as the same StreamInfo
    # objects (frozen: a change is a new object) make up the catalog.
    return "".join((
        '{"type":"hello","protocol":', str(PROTOCOL_VERSION), ',"server":', _ENCODER.encode(server),
        ',"session":', _ENCODER.encode(session), ',"heartbeat_s":', _ENCODER.encode(heartbeat_s),
        ',"streams":', _catalog_json(streams),
        # only a server with a bus (--bus) says whether it is up
        "}" if bus is None else (',"bus":{"up":true}}' if bus else ',"bus":{"up":false}}'),
    ))


_catalog_cache: tuple[tuple[StreamInfo, ...], str] = ((), "[]")


def _catalog_json(streams: list[StreamInfo]) -> str:
    global _catalog_cache
    last, text = _catalog_cache
    if len(last) == len(streams) and all(map(operator.is_, last, streams)):
        return text
    text = _ENCODER.encode([s.to_json() for s in streams])
    _catalog_cache = (tuple(streams), text)
    return text


def bus(up: bool) -> str:
    """The bus (Redis) went down or came back: remote streams stop or resume."""
    return _dumps({"type": "bus", "up": up})


def stream_msg(info: StreamInfo) -> str:
    return _dumps({"type": "stream", "stream": info.to_json()})


def stream_removed(key: int) -> str:
    return _dumps({"type": "stream_removed", "key": key})


def subscribed(ref: Any, keys: list[int], resumed: dict[str, dict[str, Any]] | None = None) -> str:
    msg: dict[str, Any] = {"type": "subscribed", "ref": ref, "keys": keys}
    if resumed:
        msg["resumed"] = resumed
    return _dumps(msg)


def unsubscribed(ref: Any, keys: list[int]) -> str:
    return _dumps({"type": "unsubscribed", "ref": ref, "keys": keys})


def pong(ref: Any) -> str:
    return _dumps({"type": "pong", "ref": ref})


def error(ref: Any, code: str, message: str) -> str:
    return _dumps({"type": "error", "ref": ref, "code": code, "message": message})


def heartbeat(t: float) -> str:
    return _dumps({"type": "heartbeat", "t": t})


def dropped(key: int, batches: int) -> str:
    return _dumps({"type": "dropped", "key": key, "batches": batches})



def alert(msg: dict[str, Any]) -> str:
    """An alert transition (see sensorstream.alerts.Transition.to_json): `type`
    "alert", stream `key`, `channel`, `state` firing|resolved, `severity`,
    `value`, `t` (Unix s), `message`, plus `id`, `stream`, `above`, `below`."""
    return _dumps(msg)


def command_sent(ref: Any, nbytes: int) -> str:
    """The command's bytes were written to the device (not: the device acted on them)."""
    return _dumps({"type": "command_sent", "ref": ref, "bytes": nbytes})


def console(key: int, lines: list[str], t: float, dropped: int = 0) -> str:
    """Raw device lines that were not data. `dropped`: lines the rate limit left out just before these."""
    msg: dict[str, Any] = {"type": "console", "key": key, "lines": lines, "t": t}
    if dropped:
        msg["dropped"] = dropped
    return _dumps(msg)


# --------------------------------------------------------------------------- client -> server text


class ProtocolError(Exception):
    """A bad client request. Becomes an `error` message; the connection stays open."""

    def __init__(self, code: str, message: str, ref: Any = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref

    def to_message(self) -> str:
        return error(self.ref, self.code, self.message)


@dataclass(frozen=True, slots=True)
class Subscribe:
    ref: Any
    streams: tuple[str, ...]
    history_s: float = 0.0
    # stream id -> (epoch, last seq received): see protocol.md, "Resume".
    resume: dict[str, tuple[str, int]] | None = None
    console: bool = False  # also the streams' raw device lines (`console` messages)


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    ref: Any
    streams: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Ping:
    ref: Any


@dataclass(frozen=True, slots=True)
class Playback:
    """Playback control of a replay server (docs/protocol.md, "Playback")."""

    ref: Any
    action: str  # one of PLAYBACK_ACTIONS
    t: float | None = None  # seek: recording time, Unix seconds
    speed: float | None = None  # speed: 0 (as fast as possible) .. MAX_PLAYBACK_SPEED


PLAYBACK_ACTIONS = ("status", "pause", "resume", "seek", "speed")
MAX_PLAYBACK_SPEED = 1000.0


@dataclass(frozen=True, slots=True)
class Command:
    """Bytes for a device: `data` is the text with its line ending, or the decoded hex."""

    ref: Any
    stream: str
    data: bytes


ClientMessage = Subscribe | Unsubscribe | Ping | Playback | Command

#: Line endings a text command may ask for.
EOLS = {"none": b"", "lf": b"\n", "cr": b"\r", "crlf": b"\r\n"}
_HEX_SEPARATORS = re.compile(r"[\s:,-]+")


def _depth_ok(obj: Any, limit: int) -> bool:
    # Iterative, so a deep document cannot blow the Python stack here either.
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, (dict, list)):
            if d > limit:
                return False
            stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return True


def _clean_ref(ref: Any) -> Any:
    """Echo a ref back only if it is small and scalar-ish, so errors can't amplify input."""
    if ref is None or isinstance(ref, (bool, int, str)):
        if isinstance(ref, str) and len(ref) > 256:
            return None
        if isinstance(ref, int) and not isinstance(ref, bool) and abs(ref) > 2**53:
            return None
        return ref
    if isinstance(ref, float) and math.isfinite(ref):
        return ref
    return None


def _patterns(msg: dict[str, Any], ref: Any) -> tuple[str, ...]:
    streams = msg.get("streams")
    if not isinstance(streams, list) or not all(isinstance(s, str) for s in streams):
        raise ProtocolError("bad_field", "'streams' must be a list of strings", ref)
    if len(streams) > MAX_PATTERNS:
        raise ProtocolError("bad_field", f"at most {MAX_PATTERNS} patterns per request", ref)
    for s in streams:
        if not s or len(s) > MAX_PATTERN_LEN:
            raise ProtocolError("bad_field", f"patterns must be 1..{MAX_PATTERN_LEN} characters", ref)
    return tuple(streams)


def _resume(raw: Any, ref: Any) -> dict[str, tuple[str, int]] | None:
    """{"<stream id>": {"epoch": str, "seq": int}, ...} -> {id: (epoch, seq)}."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or len(raw) > MAX_PATTERNS:
        raise ProtocolError("bad_field", f"'resume' must be an object of at most {MAX_PATTERNS} streams", ref)
    out = {}
    for sid, point in raw.items():
        if not isinstance(point, dict) or not sid or len(sid) > MAX_PATTERN_LEN:
            raise ProtocolError("bad_field", "'resume' maps stream ids to {\"epoch\": ..., \"seq\": ...}", ref)
        epoch, seq = point.get("epoch"), point.get("seq")
        if not isinstance(epoch, str) or len(epoch) > 64:
            raise ProtocolError("bad_field", "a resume point's 'epoch' must be a string of at most 64 characters", ref)
        if isinstance(seq, bool) or not isinstance(seq, int) or not -1 <= seq < 2**64:
            raise ProtocolError("bad_field", "a resume point's 'seq' must be an integer from -1 to 2^64-1", ref)
        out[sid] = (epoch, seq)
    return out


def parse_client_message(text: str | bytes) -> ClientMessage:
    """Parse one client text frame, or raise ProtocolError with a machine-readable code."""
    if isinstance(text, (bytes, bytearray)):
        raise ProtocolError("binary_not_supported", "clients send JSON text frames only")
    if len(text) > MAX_CONTROL_BYTES:
        raise ProtocolError("too_large", f"control messages are at most {MAX_CONTROL_BYTES} bytes")
    try:
        msg = json.loads(text)
    except RecursionError:
        raise ProtocolError("invalid_json", "JSON nested too deeply") from None
    except ValueError as e:
        raise ProtocolError("invalid_json", f"invalid JSON: {e}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("invalid_message", "a control message must be a JSON object")
    ref = _clean_ref(msg.get("ref"))
    # Nesting cannot be deeper than the number of brackets in the text (counted
    # in C): only a message with more than the limit is walked.
    if text.count("{") + text.count("[") > MAX_JSON_DEPTH and not _depth_ok(msg, MAX_JSON_DEPTH):
        raise ProtocolError("invalid_message", f"JSON nested deeper than {MAX_JSON_DEPTH}", ref)
    kind = msg.get("type")
    if kind is None:
        raise ProtocolError("missing_type", "message has no 'type'", ref)
    if kind == "subscribe":
        hist = msg.get("history_s", 0)
        if hist is None:
            hist = 0
        if isinstance(hist, bool) or not isinstance(hist, (int, float)) or not math.isfinite(hist) or hist < 0:
            raise ProtocolError("bad_field", "'history_s' must be a non-negative number", ref)
        console = msg.get("console", False)
        if not isinstance(console, bool):
            raise ProtocolError("bad_field", "'console' must be true or false", ref)
        return Subscribe(ref, _patterns(msg, ref), float(hist), _resume(msg.get("resume"), ref), console)
    if kind == "unsubscribe":
        return Unsubscribe(ref, _patterns(msg, ref))
    if kind == "ping":
        return Ping(ref)
    if kind == "playback":
        return _playback(msg, ref)
    if kind == "command":
        return _command(msg, ref)
    shown = kind if isinstance(kind, str) and len(kind) <= 64 else type(kind).__name__
    raise ProtocolError("unknown_type", f"unknown message type {shown!r}", ref)


def _number(msg: dict[str, Any], name: str, ref: Any, lo: float, hi: float) -> float:
    v = msg.get(name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        raise ProtocolError("bad_field", f"'{name}' must be a number from {lo:g} to {hi:g}", ref)
    return float(v)


def _playback(msg: dict[str, Any], ref: Any) -> Playback:
    action = msg.get("action")
    if action not in PLAYBACK_ACTIONS:
        raise ProtocolError("bad_field", f"'action' must be one of {', '.join(PLAYBACK_ACTIONS)}", ref)
    if action == "seek":
        return Playback(ref, action, t=_number(msg, "t", ref, 0.0, 1e12))
    if action == "speed":
        return Playback(ref, action, speed=_number(msg, "speed", ref, 0.0, MAX_PLAYBACK_SPEED))
    return Playback(ref, action)


def playback_state(ref: Any, state: dict[str, Any]) -> str:
    """The replay's state: the answer to every playback message, and sent to every
    client (ref null) whenever it changes."""
    return _dumps({"type": "playback", "ref": ref, "state": state})


def hex_bytes(text: str) -> bytes:
    """"01 03 00 0a" (or 01:03, 01-03, 01030a) -> bytes; ValueError if it is not hex."""
    digits = _HEX_SEPARATORS.sub("", text)
    if len(digits) % 2:
        raise ValueError("hex needs two digits per byte")
    try:
        return bytes.fromhex(digits)
    except ValueError:
        raise ValueError("hex may hold only 0-9, a-f and separators between bytes") from None


def _command(msg: dict[str, Any], ref: Any) -> Command:
    stream = msg.get("stream")
    if not isinstance(stream, str) or not 0 < len(stream) <= MAX_PATTERN_LEN:
        raise ProtocolError("bad_field", "'stream' must be a stream id", ref)
    text, hexa = msg.get("text"), msg.get("hex")
    if (text is None) == (hexa is None):
        raise ProtocolError("bad_field", "a command has exactly one of 'text' or 'hex'", ref)
    if hexa is not None:
        if not isinstance(hexa, str):
            raise ProtocolError("bad_hex", "'hex' must be a string such as \"01 03 00 0a\"", ref)
        try:
            return Command(ref, stream, hex_bytes(hexa))
        except ValueError as e:
            raise ProtocolError("bad_hex", str(e), ref) from None
    eol = msg.get("eol", "lf")
    if not isinstance(text, str):
        raise ProtocolError("bad_field", "'text' must be a string", ref)
    if eol not in EOLS:
        raise ProtocolError("bad_field", f"'eol' must be one of {', '.join(EOLS)}", ref)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\\ud800") is valid JSON but not text
        raise ProtocolError("bad_field", "'text' is not valid Unicode", ref) from None
    return Command(ref, stream, data + EOLS[eol])


# --------------------------------------------------------------------------- client-side helpers


def parse_server_message(text: str) -> dict[str, Any]:
    """Client side: decode a server text frame (the server only sends valid JSON objects)."""
    msg = json.loads(text)
    if not isinstance(msg, dict) or "type" not in msg:
        raise ValueError("server message without a type")
    return msg


def subscribe(streams: list[str], ref: Any = None, history_s: float = 0.0,
              resume: dict[str, tuple[str, int]] | None = None, console: bool = False) -> str:
    msg: dict[str, Any] = {"type": "subscribe", "ref": ref, "streams": streams, "history_s": history_s}
    if resume:
        msg["resume"] = {sid: {"epoch": e, "seq": s} for sid, (e, s) in resume.items()}
    if console:
        msg["console"] = True
    return _dumps(msg)


def command(stream: str, *, text: str | None = None, hex: str | None = None, eol: str = "lf", ref: Any = None) -> str:
    """A `command` message: `text` with a line ending (none, lf, cr, crlf), or `hex`."""
    if (text is None) == (hex is None):
        raise ValueError("give exactly one of text= or hex=")
    if hex is not None:
        return _dumps({"type": "command", "ref": ref, "stream": stream, "hex": hex})
    if eol not in EOLS:
        raise ValueError(f"eol must be one of {', '.join(EOLS)}")
    return _dumps({"type": "command", "ref": ref, "stream": stream, "text": text, "eol": eol})


def unsubscribe(streams: list[str], ref: Any = None) -> str:
    return _dumps({"type": "unsubscribe", "ref": ref, "streams": streams})


def ping(ref: Any = None) -> str:
    return _dumps({"type": "ping", "ref": ref})


def playback(action: str, ref: Any = None, **fields: Any) -> str:
    """Client side: a playback control message (fields: t for seek, speed for speed)."""
    return _dumps({"type": "playback", "ref": ref, "action": action, **fields})
