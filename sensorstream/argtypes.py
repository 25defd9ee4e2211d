"""Validating argparse types: every number, port and path a user types is checked
where it enters, with argparse's one-line error (exit 2).

The same functions check `--config` files (cli.config_file_defaults hands each
TOML value to its flag's type), so a file and a flag can never disagree about
what is allowed. Each type raises `argparse.ArgumentTypeError` with the rule
and the value, e.g. `argument --window-ms: must be a number > 0, not '-5'`.

    number(min=0, min_open=True)          # finite and > 0
    number(min=0)                         # finite and >= 0
    integer(min=1, max=65535)             # ports
    port                                  # 1..65535
    listen_port                           # 0..65535 (0: pick a free one)
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
from typing import Callable


def _fmt(v: float) -> str:
    return f"{v:g}"


def _range_text(lo: float | None, hi: float | None, lo_open: bool, what: str) -> str:
    if lo is not None and hi is not None:
        return f"{what} {'>' if lo_open else '>='} {_fmt(lo)} and <= {_fmt(hi)}"
    if lo is not None:
        return f"{what} {'>' if lo_open else '>='} {_fmt(lo)}"
    if hi is not None:
        return f"{what} <= {_fmt(hi)}"
    return what


def number(min: float | None = None, max: float | None = None, *, min_open: bool = False, name: str = "float") -> Callable[[str], float]:
    """A finite float in [min, max] (or (min, max] with min_open)."""
    rule = _range_text(min, max, min_open, "a number")

    def parse(text: str) -> float:
        try:
            v = float(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {rule}, not {text!r}") from None
        if not math.isfinite(v) or (min is not None and (v <= min if min_open else v < min)) or (max is not None and v > max):
            raise argparse.ArgumentTypeError(f"must be {rule}, not {text!r}")
        return v

    parse.__name__ = name  # argparse names the type in some messages
    return parse


def integer(min: int | None = None, max: int | None = None, *, name: str = "int") -> Callable[[str], int]:
    """A whole number in [min, max]."""
    rule = _range_text(min, max, False, "a whole number")

    def parse(text: str) -> int:
        try:
            v = int(str(text).strip())
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {rule}, not {text!r}") from None
        if (min is not None and v < min) or (max is not None and v > max):
            raise argparse.ArgumentTypeError(f"must be {rule}, not {text!r}")
        return v

    parse.__name__ = name
    parse.integer = True  # a config file's 5.0 is taken as 5 (cli._convert_one)
    return parse


positive_float = number(0, min_open=True)
nonnegative_float = number(0)
positive_int = integer(1)
nonnegative_int = integer(0)
port = integer(1, 65535, name="port")
listen_port = integer(0, 65535, name="port")  # 0: the OS picks a free port
baud = integer(50, 20_000_000, name="baud")
seed = integer(0, 2**32 - 1, name="seed")


def host(text: str) -> str:
    """An address to bind: an IP address, or a host name (resolved when listening)."""
    h = text.strip()
    bare = h[1:-1] if h.startswith("[") and h.endswith("]") else h
    if not bare:
        raise argparse.ArgumentTypeError("must be an address such as 127.0.0.1, 0.0.0.0, ::1 or a host name")
    if re.fullmatch(r"[0-9.]+", bare) or ":" in bare:
        try:
            ipaddress.ip_address(bare)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid IP address") from None
        return bare
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.?", bare):
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid host name or IP address")
    return bare


def readable_file(text: str) -> str:
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a directory, not a file")
    if not os.access(text, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text}: permission denied")
    return text


def dashboard_dir(text: str) -> str:
    """A directory holding a dashboard (an index.html)."""
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text}: no such directory")
    if not os.path.isfile(os.path.join(text, "index.html")):
        raise argparse.ArgumentTypeError(f"{text} has no index.html (it should hold a copy of the dashboard/ directory)")
    return text


def new_path(text: str) -> str:
    """A path to create: its directory must exist."""
    parent = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"{text}: directory {parent} does not exist")
    return text


#: Stream ids are subscribed to by name and by glob: no spaces, no glob characters.
STREAM_ID = r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}"


def stream_id(text: str) -> str:
    if not re.fullmatch(STREAM_ID, text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a stream id: letters, digits and . _ : / - (no spaces), e.g. sim/late")
    return text


def late(spec: str) -> tuple[str, float]:
    """ID:SECONDS (`--simulate-late`)."""
    sid, _, delay = spec.rpartition(":")
    if not sid:
        raise argparse.ArgumentTypeError(f"expected ID:SECONDS, e.g. sim/late:2, not {spec!r}")
    return stream_id(sid), nonnegative_float(delay)


def serial_port(spec: str) -> str:
    """PORT or PORT@BAUD (`--serial`): a path or a pyserial URL; BAUD a whole number."""
    head, sep, tail = spec.rpartition("@")
    if not spec.strip():
        raise argparse.ArgumentTypeError("expected PORT or PORT@BAUD, e.g. /dev/ttyUSB0@115200")
    if sep and head and "://" not in spec:
        try:
            baud(tail)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"expected PORT@BAUD with BAUD {str(e).removeprefix('must be ')}") from None
    return spec


def origin(text: str) -> str:
    """A browser origin (`--allow-origin`): scheme://host[:port], or * for any."""
    if text == "*":
        return text
    m = re.fullmatch(r"(https?)://([^/:?#\s\[\]]+|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?/?", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected an origin such as https://grafana.example.com or http://localhost:3000 (or *), not {text!r}")
    return text.rstrip("/")


def wide(spec: str) -> tuple[int, float]:
    """CHANNELS:RATE (`--simulate-wide`)."""
    c, _, rate = spec.partition(":")
    try:
        n, r = int(c), float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CHANNELS:RATE, e.g. 16:1000, not {spec!r}") from None
    if not (1 <= n <= 1024 and math.isfinite(r) and 0 < r <= 1e6):
        raise argparse.ArgumentTypeError(f"CHANNELS must be 1..1024 and RATE a number of Hz from 0 (exclusive) to 1e+06, not {spec!r}")
    return n, r


def suggest(word: str, choices) -> str:
    """' (did you mean 'x'?)' for a near miss among `choices`, else ''."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
