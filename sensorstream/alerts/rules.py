"""`[[alerts]]` tables -> checked `AlertRule`s (pure; no I/O).

A rule is either a *limit* on one channel (`above` and/or `below`) or a
*status* condition of the whole stream (`status = "disconnected"`, `"stale"`,
or a list of them). Everything else about it is shared: how long the condition
must hold before it fires (`for_ms`), how long it must be gone before it
resolves (`clear_ms`, the hysteresis), its severity and its message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("warning", "critical")
#: Stream statuses a rule may watch: `disconnected` (the source lost its device),
#: `stale` (the server saw no sample for a while, staleness.py), `failed` (the source died).
STATUSES = ("disconnected", "stale", "failed")
KEYS = ("stream", "name", "channel", "above", "below", "status", "for_ms", "clear_ms", "severity", "message")
#: Rules per server: each is evaluated on every batch of the streams it covers.
MAX_RULES = 1024
#: Longest hold (for_ms / clear_ms): a day. Longer is almost certainly a unit mistake.
MAX_HOLD_MS = 86_400_000


class RuleError(ValueError):
    """An `[[alerts]]` entry that cannot be used; the message says which and why."""


@dataclass(frozen=True, slots=True)
class AlertRule:
    stream: str  # a stream id or a glob (fnmatch syntax, whole id)
    name: str  # unique per stream; with the stream id it names the alert (metrics, webhook, wire `id`)
    channel: str | None = None  # limit rules
    above: float | None = None  # fires while value > above ...
    below: float | None = None  # ... or value < below
    status: frozenset[str] = field(default_factory=frozenset)  # status rules
    for_ms: float = 0.0
    clear_ms: float = 0.0
    severity: str = "warning"
    message: str = ""

    @property
    def is_status(self) -> bool:
        return bool(self.status)

    def describe(self) -> str:
        """The condition in words, for a default message and log lines."""
        if self.is_status:
            return "stream " + " or ".join(sorted(self.status))
        parts = []
        if self.above is not None:
            parts.append(f"{self.channel} > {self.above:g}")
        if self.below is not None:
            parts.append(f"{self.channel} < {self.below:g}")
        return " or ".join(parts)


def _number(entry: dict, key: str, where: str) -> float | None:
    v = entry.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise RuleError(f"{where}: {key} must be a finite number, not {v!r}")
    return float(v)


def _hold(entry: dict, key: str, where: str) -> float:
    v = _number(entry, key, where)
    if v is None:
        return 0.0
    if not 0 <= v <= MAX_HOLD_MS:
        raise RuleError(f"{where}: {key} must be 0..{MAX_HOLD_MS} (milliseconds), not {v:g}")
    return v


def _text(entry: dict, key: str, where: str, limit: int = 256) -> str | None:
    v = entry.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or len(v) > limit:
        raise RuleError(f"{where}: {key} must be a string of at most {limit} characters")
    return v


def parse_rule(entry: Any, where: str, stream: str | None = None) -> AlertRule:
    """One `[[alerts]]` table. `stream`: the profile's stream id (profiles may omit it)."""
    if not isinstance(entry, dict):
        raise RuleError(f"{where}: expected a table ([[alerts]]), not {type(entry).__name__}")
    unknown = sorted(set(entry) - set(KEYS))
    if unknown:
        raise RuleError(f"{where}: unknown key {unknown[0]!r} (an alert has: {', '.join(KEYS)})")
    sid = _text(entry, "stream", where) or stream
    if not sid:
        raise RuleError(f'{where}: needs stream = "<id or glob>" (which stream the limit applies to)')
    channel = _text(entry, "channel", where)
    above, below = _number(entry, "above", where), _number(entry, "below", where)
    status = entry.get("status")
    statuses: frozenset[str] = frozenset()
    if status is not None:
        items = status if isinstance(status, list) else [status]
        bad = [s for s in items if s not in STATUSES]
        if bad or not items:
            raise RuleError(f"{where}: status must be one of {', '.join(STATUSES)} (or a list of them), not {status!r}")
        statuses = frozenset(items)
        if channel is not None or above is not None or below is not None:
            raise RuleError(f"{where}: a status alert watches the whole stream: drop channel/above/below, or make it two alerts")
    else:
        if not channel:
            raise RuleError(f'{where}: needs channel = "<name>" with above and/or below, or status = "disconnected"')
        if above is None and below is None:
            raise RuleError(f"{where}: channel {channel!r} needs a limit: above = <number> and/or below = <number>")
        if above is not None and below is not None and below > above:
            # value > above or value < below: with below > above that is always true.
            raise RuleError(f"{where}: below ({below:g}) > above ({above:g}) would always fire; "
                            "the alert fires outside [below, above]")
    severity = _text(entry, "severity", where) or "warning"
    if severity not in SEVERITIES:
        raise RuleError(f"{where}: severity must be {' or '.join(SEVERITIES)}, not {severity!r}")
    rule = AlertRule(stream=sid, name="", channel=channel, above=above, below=below, status=statuses,
                     for_ms=_hold(entry, "for_ms", where), clear_ms=_hold(entry, "clear_ms", where),
                     severity=severity, message=_text(entry, "message", where, 1024) or "")
    name = _text(entry, "name", where, 64) or rule.describe().replace(" ", "")
    return AlertRule(**{**_fields(rule), "name": name, "message": rule.message or rule.describe()})


def _fields(rule: AlertRule) -> dict:
    return {k: getattr(rule, k) for k in AlertRule.__slots__}


def parse_rules(entries: Any, where: str, stream: str | None = None) -> list[AlertRule]:
    """The `alerts` array of a profile or config file (None: no alerts)."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise RuleError(f"{where}: alerts must be an array of tables ([[alerts]])")
    if len(entries) > MAX_RULES:
        raise RuleError(f"{where}: at most {MAX_RULES} alerts")
    rules = [parse_rule(e, f"{where}: alerts[{i}]", stream) for i, e in enumerate(entries)]
    seen: set[tuple[str, str]] = set()
    for i, r in enumerate(rules):
        if (r.stream, r.name) in seen:
            raise RuleError(f"{where}: alerts[{i}]: a second alert named {r.name!r} on {r.stream}; give one a different name")
        seen.add((r.stream, r.name))
    return rules
