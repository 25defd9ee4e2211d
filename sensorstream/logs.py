"""Logging set-up: text or JSON lines, rate-limited so a flood cannot fill a disk.

Every record passes a `RateLimitFilter` keyed by (logger, level, message
template): a client that makes the server log the same kind of line ten
thousand times a second produces `burst` lines, then one line a second or so,
and the next line that gets through says how many similar ones were
suppressed. Different templates (a connection opening, a device unplugged)
have their own buckets, so a flood of one kind does not hide the others.

Structured fields ride on records as `extra={...}`; the JSON formatter writes
them as keys, the text formatter appends them as key=value.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import time

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class RateLimitFilter(logging.Filter):
    """Per-template token bucket: `burst` records at once, `rate` a second after that."""

    def __init__(self, rate: float = 2.0, burst: int = 20, max_keys: int = 1024, clock=time.monotonic):
        super().__init__()
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        # key -> [tokens, last time, suppressed since the last record let through]
        self._buckets: dict[tuple, list] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.exc_info:
            # Tracebacks of bugs are rare and precious: rate-limited like the rest,
            # but under their own key per exception type.
            key = (record.name, record.levelno, record.msg, record.exc_info[0])
        else:
            key = (record.name, record.levelno, record.msg)
        now = self.clock()
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.max_keys:
                # Templates are finite in practice; if not, forget the stalest half.
                for k in sorted(self._buckets, key=lambda k: self._buckets[k][1])[: self.max_keys // 2]:
                    del self._buckets[k]
            b = self._buckets[key] = [float(self.burst), now, 0]
        b[0] = min(self.burst, b[0] + (now - b[1]) * self.rate)
        b[1] = now
        if b[0] < 1.0:
            b[2] += 1
            return False
        b[0] -= 1.0
        if b[2]:
            record.suppressed = b[2]
            record.msg = f"{record.msg} ({b[2]} similar messages suppressed)"
            b[2] = 0
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in _extras(record).items():
            out[k] = v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = _extras(record)
        extra.pop("suppressed", None)
        if extra:
            line += "  " + " ".join(f"{k}={v}" for k, v in extra.items())
        return line


def setup(level: str = "info", fmt: str = "text", stream=None, *, rate: float = 2.0, burst: int = 20) -> logging.Handler:
    """Configure the root logger: one handler on stderr, rate-limited, in `fmt`."""
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', not {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RateLimitFilter(rate=rate, burst=burst))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # trio-websocket logs every frame at debug; keep it out unless asked for by name.
    logging.getLogger("trio-websocket").setLevel(max(logging.INFO, root.level))
    return handler
