"""Serial ports as sources: pyserial to open them, trio to wait on them.

One `run_serial` task per port. It opens the port (a path, a pyserial URL such
as `socket://host:port`, `rfc2217://host:port` or `loop://`, or whatever port
matches the profile's VID:PID / serial number), feeds what it reads to the
sans-I/O parser (ingest/parsing/) and the parsed samples to a StreamFeed.

Reads never block the event loop: on POSIX the port's file descriptor is
awaited with `trio.lowlevel.wait_readable`, and only then read; URL ports and
other platforms fall back to a worker thread with a short read timeout.

When the port fails (EIO, a vanished device, a closed pseudo-terminal) the
stream becomes `disconnected`, everything else keeps running, and the task
retries with capped exponential backoff. When the port comes back, at the same
path or (with a VID:PID/serial-number match) at a new one, the same stream
continues, seq still increasing.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import serial
import serial.tools.list_ports
import trio

from ..alerts.rules import AlertRule, parse_rules
from ..commands.port import DevicePort
from ..commands.profile import parse_actions, parse_polls
from ..hub import Hub
from ..ingest.parsing import make_parser, profile_units
from ..protocol import Channel
from ..ingest.feed import StreamFeed
from . import profile_schema

log = logging.getLogger(__name__)

READ_SIZE = 65536
# After a short read, let bytes accumulate this long before the next one. A fast
# device otherwise wakes the loop for every few dozen bytes, and everything after
# the read (parsing, batching) is cheaper per sample on bigger chunks. It is a
# fraction of the batch window, so it adds no latency a subscriber can see.
# A read that already returned COALESCE_BELOW bytes or more means a rate at which
# the kernel's tty buffer (4 KiB for N_TTY) could fill while we wait, so then we
# read again at once instead.
COALESCE_S = 0.01
COALESCE_BELOW = 2048
BACKOFF_MIN = 0.5
BACKOFF_MAX = 5.0
ERROR_LOG_INTERVAL = 5.0  # at most one parse-error summary per stream this often


@dataclass
class SerialSpec:
    """Everything needed to find, open and decode one serial device."""

    stream_id: str
    path: str | None = None  # a device path or a pyserial URL
    baud: int = 115200
    vid_pid: str | None = None  # "2341:0043"
    serial_number: str | None = None
    device: str = ""
    rate_hz: float | None = None
    profile: dict[str, Any] = field(default_factory=dict)  # the TOML document (format, channels)
    alerts: tuple[AlertRule, ...] = ()  # the profile's [[alerts]], checked (the server evaluates them)

    @property
    def is_url(self) -> bool:
        return bool(self.path) and "://" in self.path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "port"


def spec_from_arg(arg: str, default_baud: int = 115200) -> SerialSpec:
    """`--serial PORT` or `--serial PORT@BAUD` (URLs allowed: socket://host:1234@9600)."""
    path, baud = arg, default_baud
    head, sep, tail = arg.rpartition("@")
    if sep and tail.isdigit() and head:
        path, baud = head, int(tail)
    if "://" in path:
        name = path.split("://", 1)[1]
    elif path.startswith("/dev/pts/"):
        name = "pts-" + path.rsplit("/", 1)[1]  # a pseudo-terminal: "serial/0" would say nothing
    else:
        name = os.path.basename(path.rstrip("/"))
    return SerialSpec(stream_id=f"serial/{_slug(name)}", path=path, baud=baud, device="serial")


def alert_rules(doc: dict[str, Any], stream_id: str, where: str | os.PathLike) -> list[AlertRule]:
    """The profile's [[alerts]] for its stream (RuleError, a ValueError, says what is wrong)."""
    return parse_rules(doc.get("alerts"), str(where), stream=stream_id)


def load_device_profile(path: str | os.PathLike) -> SerialSpec:
    """A device profile (docs/devices.md) -> SerialSpec. Raises ProfileError (a
    ValueError) naming the file, the key and what is allowed (profile_schema.py)."""
    doc = profile_schema.read(path)
    port = doc.get("port", {})
    stream = doc.get("stream", {})
    try:
        make_parser(doc)  # the parser's own checks (struct syntax...) now, not at first data
        parse_actions(doc), parse_polls(doc)  # and the commands' ([[actions]] templates, [[poll]] bytes)
    except ValueError as e:
        raise profile_schema.ProfileError(f"{os.fspath(path)}: {e}") from None
    sid = stream.get("id") or f"serial/{_slug(Path(path).stem)}"
    rate = stream.get("rate_hz")
    try:
        alerts = alert_rules(doc, str(sid), path)  # checked now, like the formats: a bad limit is a start-up error
    except ValueError as e:
        raise profile_schema.ProfileError(str(e)) from None
    return SerialSpec(
        stream_id=str(sid),
        path=port.get("path"),
        baud=int(port.get("baud", 115200)),
        vid_pid=port.get("vid_pid"),
        serial_number=port.get("serial_number"),
        device=str(stream.get("device", "")),
        rate_hz=None if rate is None else float(rate),
        profile=doc,
        alerts=tuple(alerts),
    )


# ----------------------------------------------------------------- finding ports


def match_port(ports: Iterable[Any], vid_pid: str | None, serial_number: str | None) -> str | None:
    """The device path of the first port whose VID:PID and serial number match (pure, testable).

    `ports` are `serial.tools.list_ports` ListPortInfo objects (anything with
    .device, .vid, .pid, .serial_number)."""
    want_vid = want_pid = None
    if vid_pid:
        v, _, p = vid_pid.partition(":")
        want_vid, want_pid = int(v, 16), int(p, 16)
    for info in ports:
        if want_vid is not None and (info.vid != want_vid or info.pid != want_pid):
            continue
        if serial_number and (info.serial_number or "") != serial_number:
            continue
        return info.device
    return None


def find_port(spec: SerialSpec) -> str | None:
    """Where the device is now (None if absent)."""
    if spec.vid_pid or spec.serial_number:
        found = match_port(serial.tools.list_ports.comports(), spec.vid_pid, spec.serial_number)
        if found:
            return found
    if spec.path and (spec.is_url or os.path.exists(spec.path)):
        return spec.path
    return None


def list_ports() -> list[dict[str, str]]:
    rows = []
    for p in sorted(serial.tools.list_ports.comports(), key=lambda p: p.device):
        rows.append({
            "device": p.device,
            "description": p.description or "",
            "vid_pid": f"{p.vid:04x}:{p.pid:04x}" if p.vid is not None and p.pid is not None else "",
            "serial_number": p.serial_number or "",
        })
    return rows


# ----------------------------------------------------------------- reading


class PortGone(Exception):
    """The port failed or vanished while open."""


def _open(path: str, baud: int) -> serial.SerialBase:
    if "://" in path:
        # URL ports: a short timeout lets the reader thread notice cancellation.
        return serial.serial_for_url(path, baudrate=baud, timeout=0.1)
    # exclusive: two readers of one port would each get part of its bytes, silently;
    # with a lock the second one is refused, and says why (open_error).
    return serial.Serial(path, baudrate=baud, timeout=0, exclusive=True)


def open_error(e: BaseException) -> str:
    """Why a port would not open, in words a user can act on."""
    text = str(e)
    if "exclusively lock" in text:
        return "in use by another program (another sensorstream, or a serial monitor that locks it); close it"
    if isinstance(e, OSError) and e.errno == 13 or "Permission denied" in text:
        return "permission denied (on Linux: add yourself to the dialout group, then log in again)"
    return text


async def _read_chunks(ser: serial.SerialBase, coalesce_s: float = COALESCE_S):
    """Yield (bytes, arrival_time) as they arrive; raise PortGone when the port fails."""
    if type(ser) is serial.Serial and hasattr(ser, "fd"):
        fd = ser.fileno()
        short = False
        while True:
            if short and coalesce_s:
                await trio.sleep(coalesce_s)
            await trio.lowlevel.wait_readable(fd)
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                continue
            except OSError as e:  # EIO when a USB device or a pty's other end goes away
                raise PortGone(f"{e.strerror or e}") from None
            if not data:
                # Readable but empty: the device is gone (what pyserial reports too).
                raise PortGone("port returned no data (device disconnected?)")
            # The bytes were read now, so now is their arrival time, even if they
            # waited up to coalesce_s in the port's buffer.
            short = len(data) < COALESCE_BELOW
            yield data, time.time()
    else:
        def read() -> bytes:
            return ser.read(max(1, min(ser.in_waiting, READ_SIZE)))

        while True:
            try:
                data = await trio.to_thread.run_sync(read, abandon_on_cancel=True)
            except (serial.SerialException, OSError) as e:
                raise PortGone(str(e)) from None
            if data:
                yield data, time.time()


def _channels(names: list[str], units: dict[str, str]) -> list[Channel]:
    return [Channel(n, units.get(n, "")) for n in names]


async def _write_commands(port: DevicePort, ser: serial.SerialBase, failed: Callable[[str], None]) -> None:
    """The port's write side, next to its reader: non-blocking writes on the fd (a
    worker thread for URL ports). A write error ends the connection like a read error."""
    try:
        if type(ser) is serial.Serial and hasattr(ser, "fd"):
            await port.write_fd(ser.fileno())
        else:
            await port.write_with(ser.write)
    except (serial.SerialException, OSError) as e:
        failed(f"write failed: {getattr(e, 'strerror', None) or e}")


async def run_serial(
    hub: Hub,
    spec: SerialSpec,
    *,
    port: DevicePort | None = None,
    window_s: float = 0.05,
    max_samples: int = 4096,
    backoff_min: float = BACKOFF_MIN,
    backoff_max: float = BACKOFF_MAX,
    coalesce_s: float | None = None,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    parser = make_parser(spec.profile)
    units = profile_units(spec.profile)
    commandable = port is not None and port.accepts_commands
    feed = StreamFeed(hub, spec.stream_id, _channels(parser.channel_names, units), rate_hz=spec.rate_hz,
                      device=spec.device or "serial", window_s=window_s, max_samples=max_samples,
                      commands=commandable, actions=tuple(a.to_json() for a in port.actions) if commandable else ())
    console: list[bytes] = []
    if port is not None:
        port.key = feed.key
        parser.counters.console = console  # lines that are not data: the device's console
    counters = hub.stats(feed.key).source
    counters.update(reconnects=0, open_failures=0, parse_errors=0)
    task_status.started(feed)
    delay = backoff_min
    opened_before = False
    last_error_log = -float("inf")
    errors_logged = 0

    def _count_errors() -> None:
        nonlocal last_error_log, errors_logged
        c = parser.counters
        errors = c.lines_malformed + c.lines_oversize + c.values_invalid + c.labels_rejected
        if errors != counters["parse_errors"]:
            counters.update(c.as_dict())
            counters["parse_errors"] = errors
            now = trio.current_time()
            if now - last_error_log >= ERROR_LOG_INTERVAL:
                log.warning("%s: %d bad lines/values so far (+%d): %s", spec.stream_id, errors,
                            errors - errors_logged, {k: v for k, v in c.as_dict().items() if v and k != "lines_ok"})
                last_error_log, errors_logged = now, errors
        else:
            counters["lines_ok"] = c.lines_ok

    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed.run_flusher)
        try:
            while True:
                where = find_port(spec)
                ser = None
                try:
                    if where is None:
                        raise serial.SerialException(f"{spec.path or spec.vid_pid or spec.serial_number} not found")
                    ser = _open(where, spec.baud)
                except (serial.SerialException, OSError, ValueError) as e:
                    counters["open_failures"] += 1
                    if feed.info.status == "live":
                        feed.set_status("disconnected")
                    # Log the first failure and then only at the backoff cap, not every retry.
                    if counters["open_failures"] == 1 or delay >= backoff_max:
                        log.warning("%s: cannot open %s (%s); retrying in %.1f s", spec.stream_id, where or spec.path, open_error(e), delay)
                    await trio.sleep(delay)
                    delay = min(delay * 2, backoff_max)
                    continue
                if opened_before:
                    counters["reconnects"] += 1
                    parser.reconnect()
                opened_before = True
                delay = backoff_min
                log.info("%s: connected to %s at %d baud", spec.stream_id, where, spec.baud)
                if feed.info.status != "live":
                    feed.set_status("live")
                gone: str | None = None
                try:
                    async with trio.open_nursery() as conn:
                        def failed(why: str) -> None:
                            nonlocal gone
                            gone = gone or why
                            conn.cancel_scope.cancel()

                        if port is not None:
                            port.set_connected(True)
                            if commandable:
                                conn.start_soon(_write_commands, port, ser, failed)
                                if port.polls:
                                    conn.start_soon(port.run_polls)
                        try:
                            # Coalescing never exceeds a fifth of the batch window.
                            wait = min(COALESCE_S, window_s / 5) if coalesce_s is None else coalesce_s
                            async for data, arrival in _read_chunks(ser, wait):
                                parsed = parser.feed(data, arrival)
                                if parsed.channels_changed:
                                    feed.set_channels(_channels(parser.channel_names, units))
                                if len(parsed):
                                    feed.push(parsed.timestamps, parsed.values)
                                if console:
                                    port.console_lines(console, arrival)
                                    console.clear()
                                _count_errors()
                        except PortGone as e:
                            failed(str(e))
                finally:
                    if port is not None:
                        port.set_connected(False)  # what is still queued is refused: `disconnected`
                    ser.close()
                if gone is not None:
                    log.warning("%s: disconnected (%s); retrying", spec.stream_id, gone)
                    feed.set_status("disconnected")
                await trio.sleep(delay)
        finally:
            nursery.cancel_scope.cancel()
            if feed.info.status == "live":
                feed.set_status("disconnected")
