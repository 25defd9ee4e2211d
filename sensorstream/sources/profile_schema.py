"""The device-profile schema, as a table: every section, every key, what it allows.

A profile (docs/devices.md) is checked against it when it is loaded, before
anything starts, and every mistake becomes one `ProfileError` line naming the
file, the key and what is allowed, with a did-you-mean for near misses:

    devices/x.toml: [port] unknown key 'baudrate' (did you mean 'baud'?); [port] takes path, vid_pid, serial_number, baud

Sections are registered, one entry each, so a feature that adds one ([[actions]],
[[poll]], [[alerts]]...) registers it next to its own code:

    from sensorstream.sources.profile_schema import Section, register, string, number

    register(Section("alerts", array=True, keys={
        "channel": string(required=True),
        "above": number(),
    }, doc="alert rules"))

A `check` function on a section sees the whole section (after its keys passed)
for rules that span keys; it raises `ValueError(message)`.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..argtypes import STREAM_ID, suggest
from ..server.security import ConfigError


class ProfileError(ConfigError):
    """A device profile that cannot be used, with the file and key in the message (exit code 2)."""


# ----------------------------------------------------------------- value checks
# Each returns a Key: a function value -> None that raises ValueError("expected ...").


@dataclass(frozen=True)
class Key:
    check: Callable[[Any], None]
    required: bool = False


def _key(check: Callable[[Any], None], required: bool) -> Key:
    return Key(check, required)


def string(*, choices: tuple[str, ...] | None = None, pattern: str | None = None, describe: str = "", required: bool = False,
           max_len: int = 1024) -> Key:
    rx = re.compile(pattern) if pattern else None

    def check(v: Any) -> None:
        if not isinstance(v, str):
            raise ValueError(f"expected {describe or 'a string'}, not {v!r}")
        if choices is not None and v not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, not {v!r}{suggest(v, choices)}")
        if rx is not None and not rx.fullmatch(v):
            raise ValueError(f"expected {describe}, not {v!r}")
        if len(v) > max_len:
            raise ValueError(f"expected at most {max_len} characters, not {len(v)}")

    return _key(check, required)


def number(*, min: float | None = None, max: float | None = None, min_open: bool = False, integer: bool = False,
           required: bool = False) -> Key:
    what = "a whole number" if integer else "a number"
    if min is not None and max is not None:
        what += f" {'>' if min_open else '>='} {min:g} and <= {max:g}"
    elif min is not None:
        what += f" {'>' if min_open else '>='} {min:g}"

    def check(v: Any) -> None:
        ok = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok or not math.isfinite(v):
            raise ValueError(f"expected {what}, not {v!r}")
        if (min is not None and (v <= min if min_open else v < min)) or (max is not None and v > max):
            raise ValueError(f"expected {what}, not {v!r}")

    return _key(check, required)


def boolean(*, required: bool = False) -> Key:
    def check(v: Any) -> None:
        if not isinstance(v, bool):
            raise ValueError(f"expected true or false, not {v!r}")

    return _key(check, required)


def string_list(*, required: bool = False, max_items: int = 1024) -> Key:
    def check(v: Any) -> None:
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ValueError(f"expected a list of strings such as [\"t\", \"ax\"], not {v!r}")
        if len(v) > max_items:
            raise ValueError(f"expected at most {max_items} items, not {len(v)}")

    return _key(check, required)


def anything(*, required: bool = False) -> Key:
    return _key(lambda v: None, required)


# ----------------------------------------------------------------- sections


@dataclass(frozen=True)
class Section:
    name: str
    keys: Mapping[str, Key]
    array: bool = False  # [[name]]: any number of tables
    required: bool = False
    check: Callable[[dict[str, Any]], None] | None = None  # rules across keys; raises ValueError
    doc: str = ""

    @property
    def header(self) -> str:
        return f"[[{self.name}]]" if self.array else f"[{self.name}]"


SECTIONS: dict[str, Section] = {}


def register(section: Section) -> Section:
    """Add (or replace) a profile section. Returns it, so it can be a module-level constant."""
    SECTIONS[section.name] = section
    return section


#: Keys of a simulator profile's channels (devices/sim-*.toml), never of a device's.
SIGNAL_KEYS = frozenset({"base", "amplitude", "period_s", "phase", "drift", "noise", "spike_prob", "spike_size"})


def _port_check(sec: dict[str, Any]) -> None:
    if not (sec.get("path") or sec.get("vid_pid") or sec.get("serial_number")):
        raise ValueError("needs path, vid_pid or serial_number (e.g. path = \"/dev/ttyACM0\")")


def _format_check(sec: dict[str, Any]) -> None:
    kind = sec.get("kind", "auto")
    if kind == "cobs" and "struct" not in sec:
        raise ValueError("kind = \"cobs\" needs struct = \"<...\" (Python struct syntax, e.g. \"<Iffffff\")")
    for key in ("struct", "fields"):
        if key in sec and kind != "cobs":
            raise ValueError(f"{key} only applies to kind = \"cobs\"")
    if "columns" in sec and kind not in ("csv", "auto"):
        raise ValueError("columns only applies to kind = \"csv\"")


register(Section("stream", {
    "id": string(pattern=STREAM_ID, describe="a stream id of letters, digits and . _ : / - (no spaces), e.g. \"arduino/plotter\""),
    "device": string(max_len=128),
    "rate_hz": number(min=0, max=1e7, min_open=True),
}, doc="the stream: id, device label, nominal rate"))

register(Section("port", {
    "path": string(describe="a device path or a pyserial URL"),
    "vid_pid": string(pattern=r"[0-9A-Fa-f]{4}:[0-9A-Fa-f]{4}", describe="hex VID:PID such as \"2341:0043\" (see `sensorstream ports`)"),
    "serial_number": string(),
    "baud": number(min=50, max=20_000_000, integer=True),
}, required=True, check=_port_check, doc="where the device is"))

register(Section("format", {
    "kind": string(choices=("auto", "csv", "labels", "json", "cobs")),
    "timestamp_field": string(),
    "timestamp_unit": string(choices=("s", "ms", "us", "ns")),
    "max_line": number(min=1, max=16 * 1024 * 1024, integer=True),
    "max_channels": number(min=1, max=1024, integer=True),
    "discard_first_partial": boolean(),
    "columns": string_list(),
    "struct": string(),
    "fields": string_list(),
}, check=_format_check, doc="how the bytes are read"))

register(Section("channels", {
    "name": string(required=True),
    "unit": string(max_len=64),
    "scale": number(),
    "offset": number(),
}, array=True, doc="units and calibration, by channel name"))


def _alert_keys() -> dict[str, Key]:
    from ..alerts.rules import KEYS

    return {k: anything() for k in KEYS}


# Limits (docs/alerts.md): the keys are listed here, the values checked by alerts.rules.parse_rules.
register(Section("alerts", _alert_keys(), array=True, doc="alert limits"))


def _commands_check(table: str) -> Callable[[dict[str, Any]], None]:
    """Rules across an entry's keys (a slider's min < max, a template that renders,
    one of data/hex): commands.profile's, one entry at a time."""

    def check(entry: dict[str, Any]) -> None:
        from ..commands import profile

        (profile.parse_actions if table == "actions" else profile.parse_polls)({table: [entry]})

    return check


# Commands (docs/devices.md, "Commands"): dashboard buttons/sliders, and periodic polls.
register(Section("actions", {
    "name": string(required=True, max_len=64),
    "template": string(required=True, describe='text with {value} for a slider, e.g. "RATE {value}\\n"'),
    "min": number(),
    "max": number(),
    "step": number(min=0, min_open=True),
}, array=True, check=_commands_check("actions"), doc="buttons and sliders that send commands"))
register(Section("poll", {
    "every_ms": number(min=10, max=86_400_000, required=True),
    "data": string(describe='text, e.g. "READ?\\r\\n"'),
    "hex": string(describe='bytes in hex, e.g. "01 03 00 00 00 0a"'),
    "checksum": string(choices=("crc8", "crc16-modbus", "xor", "sum8")),
}, array=True, check=_commands_check("poll"), doc="bytes written to the device on a schedule"))


# ----------------------------------------------------------------- checking


def _where(path: str, section: Section, index: int | None) -> str:
    if section.array and index is not None:
        return f"{path}: {section.header} #{index + 1}"
    return f"{path}: {section.header}"


def _check_table(path: str, section: Section, table: Any, index: int | None) -> None:
    where = _where(path, section, index)
    if not isinstance(table, dict):
        raise ProfileError(f"{where} must be a table, not {table!r}")
    for key, value in table.items():
        spec = section.keys.get(key)
        if spec is None:
            takes = ", ".join(section.keys)
            raise ProfileError(f"{where}: unknown key {key!r}{suggest(key, section.keys)}; {section.header} takes {takes}")
        try:
            spec.check(value)
        except ValueError as e:
            raise ProfileError(f"{where} {key}: {e}") from None
    for key, spec in section.keys.items():
        if spec.required and key not in table:
            raise ProfileError(f"{where}: missing {key} (required)")
    if section.check is not None:
        try:
            section.check(table)
        except ValueError as e:
            raise ProfileError(f"{where}: {e}") from None


def _unknown_top_level(path: str, key: str, value: Any) -> ProfileError:
    hint = suggest(key, SECTIONS) if isinstance(value, (dict, list)) else ""
    if not hint:
        # A key that belongs inside a section (`rate_hz = 100` above every table, or `rate`).
        owners = [s for s in SECTIONS.values() if not s.array and (key in s.keys or suggest(key, s.keys))]
        if owners:
            s = owners[0]
            inner = key if key in s.keys else suggest(key, s.keys).split("'")[1]
            hint = f" (did you mean {inner} under {s.header}?)"
    kind = "section" if isinstance(value, (dict, list)) else "key"
    shown = f"[{key}]" if kind == "section" else repr(key)
    return ProfileError(f"{path}: unknown {kind} {shown}{hint}; a profile has {', '.join(s.header for s in SECTIONS.values())}")


def validate(doc: Mapping[str, Any], path: str | os.PathLike = "<profile>") -> None:
    """Raise ProfileError for the first thing in `doc` the schema does not allow."""
    path = os.fspath(path)
    chans = doc.get("channels")
    if "port" not in doc and isinstance(chans, list) and any(isinstance(c, dict) and SIGNAL_KEYS & c.keys() for c in chans):
        raise ProfileError(f"{path} is a simulator profile (its channels describe signals), not a device profile: "
                           f"run it with `sensorstream simulate --pty --profile {path}` and serve --serial the path it prints")
    for key, value in doc.items():
        section = SECTIONS.get(key)
        if section is None:
            raise _unknown_top_level(path, key, value)
        if section.array:
            if isinstance(value, dict):
                raise ProfileError(f"{path}: [{key}] must be an array of tables: write [[{key}]] above each entry")
            if not isinstance(value, list):
                raise ProfileError(f"{path}: {key} must be written as [[{key}]] tables, not {value!r}")
            for i, table in enumerate(value):
                _check_table(path, section, table, i)
        else:
            if isinstance(value, list):
                raise ProfileError(f"{path}: [[{key}]] appears more than once; write a single [{key}] table")
            _check_table(path, section, value, None)
    for section in SECTIONS.values():
        if section.required and section.name not in doc:
            what = ""
            if section.check is not None:
                try:
                    section.check({})
                except ValueError as e:
                    what = f" ({e})"
            empty = " (the file is empty)" if not doc else ""
            raise ProfileError(f"{path}: missing {section.header}{what}{empty}")


def read(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a profile file; every failure is one ProfileError line."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except IsADirectoryError:
        raise ProfileError(f"{os.fspath(path)} is a directory, not a device profile (.toml file)") from None
    except FileNotFoundError:
        raise ProfileError(f"cannot read device profile {os.fspath(path)}: no such file "
                           "(the shipped examples are in devices/, e.g. devices/arduino-plotter.toml)") from None
    except OSError as e:
        raise ProfileError(f"cannot read device profile {os.fspath(path)}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ProfileError(f"{os.fspath(path)}: not a text (UTF-8) file") from None
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{os.fspath(path)}: not valid TOML: {e}") from None
    validate(doc, path)
    return doc
