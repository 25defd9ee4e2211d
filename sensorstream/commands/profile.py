"""A device profile's ``[[actions]]`` and ``[[poll]]`` tables, and the poll schedule. Pure.

    [[actions]]                # a button: sends its template as is
    name = "LED on"
    template = "LED 1\\n"

    [[actions]]                # a slider: {value} is its number, min..max (step optional)
    name = "Rate"
    template = "RATE {value}\\n"
    min = 1
    max = 1000

    [[poll]]                   # written by the server every every_ms
    every_ms = 500
    hex = "01 03 00 00 00 0a"  # or data = "READ?\\r\\n" (text)
    checksum = "crc16-modbus"  # optional: crc8, crc16-modbus, xor, sum8
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .checksum import CHECKSUMS, append_checksum
from ..protocol import hex_bytes
from .encoding import CommandError, render_template

ACTION_KEYS = {"name": str, "template": str, "min": (int, float), "max": (int, float), "step": (int, float)}
POLL_KEYS = {"every_ms": (int, float), "data": str, "hex": str, "checksum": str}
MAX_ACTIONS = 32
MAX_POLLS = 16
MIN_POLL_MS = 10  # a poll faster than this would be a flood, not a poll


@dataclass(frozen=True, slots=True)
class Action:
    name: str
    template: str
    min: float | None = None
    max: float | None = None
    step: float | None = None

    @property
    def is_slider(self) -> bool:
        return self.min is not None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "template": self.template}
        for k in ("min", "max", "step"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        return d


@dataclass(frozen=True, slots=True)
class Poll:
    every_s: float
    data: bytes  # checksum included


def _check_keys(entry: Any, allowed: dict[str, Any], table: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise ValueError(f"[[{table}]] entries must be tables")
    for k, v in entry.items():
        if k not in allowed:
            raise ValueError(f"[[{table}]] does not take {k!r} (it takes {', '.join(allowed)})")
        if isinstance(v, bool) or not isinstance(v, allowed[k]):
            raise ValueError(f"[[{table}]] {k} has the wrong type ({type(v).__name__})")
    return entry


def _entries(doc: dict[str, Any], table: str, limit: int, keys: dict[str, Any]) -> list[dict[str, Any]]:
    entries = doc.get(table, [])
    if len(entries) > limit:
        raise ValueError(f"at most {limit} [[{table}]] entries")
    return [_check_keys(e, keys, table) for e in entries]


def parse_actions(doc: dict[str, Any]) -> tuple[Action, ...]:
    out = []
    for e in _entries(doc, "actions", MAX_ACTIONS, ACTION_KEYS):
        if "name" not in e or "template" not in e:
            raise ValueError("[[actions]] entries need a name and a template")
        lo, hi = e.get("min"), e.get("max")
        if (lo is None) != (hi is None):
            raise ValueError(f"action {e['name']!r}: a slider needs both min and max")
        if lo is not None and not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"action {e['name']!r}: min must be below max")
        if lo is None and "{value}" in e["template"]:
            raise ValueError(f"action {e['name']!r}: a template with {{value}} needs min and max (a slider)")
        try:
            render_template(e["template"], lo)
        except CommandError as err:
            raise ValueError(f"action {e['name']!r}: {err.message}") from None
        out.append(Action(e["name"], e["template"], lo, hi, e.get("step")))
    return tuple(out)


def parse_polls(doc: dict[str, Any]) -> tuple[Poll, ...]:
    out = []
    for e in _entries(doc, "poll", MAX_POLLS, POLL_KEYS):
        every = e.get("every_ms")
        if every is None or not math.isfinite(every) or every < MIN_POLL_MS:
            raise ValueError(f"[[poll]] every_ms must be a number >= {MIN_POLL_MS}")
        if ("data" in e) == ("hex" in e):
            raise ValueError("[[poll]] needs exactly one of data (text) or hex")
        if "checksum" in e and e["checksum"] not in CHECKSUMS:
            raise ValueError(f"[[poll]] checksum must be one of {', '.join(CHECKSUMS)}")
        try:
            raw = hex_bytes(e["hex"]) if "hex" in e else e["data"].encode("utf-8")
        except ValueError as err:
            raise ValueError(f"[[poll]] hex: {err}") from None
        if not raw:
            raise ValueError("[[poll]] data is empty")
        out.append(Poll(every / 1000.0, append_checksum(raw, e.get("checksum"))))
    return tuple(out)


class PollSchedule:
    """When each poll is due, from a start time: poll i goes out at start + k * every_i.

    Due times are multiples of the period from the start, never "last + period",
    so a late wake-up does not shift the schedule; polls missed by more than a
    period are skipped, not sent in a burst.
    """

    def __init__(self, polls: tuple[Poll, ...], start: float):
        self.polls = polls
        self.start = start
        self._k = [1] * len(polls)  # next multiple due, per poll

    def next_at(self) -> float | None:
        if not self.polls:
            return None
        return min(self.start + k * p.every_s for k, p in zip(self._k, self.polls))

    def due(self, now: float) -> list[bytes]:
        out = []
        for i, p in enumerate(self.polls):
            at = self.start + self._k[i] * p.every_s
            if at <= now:
                out.append(p.data)
                # The next multiple after now (skips what a stall missed).
                self._k[i] = max(self._k[i] + 1, int((now - self.start) / p.every_s) + 1)
        return out
