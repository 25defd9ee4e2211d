"""``json``: ``{"t": 12.5, "imu": {"ax": 0.1}}`` -- one object per line, one nesting level."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from .channels import REJECTED, ChannelTable
from .numbers import to_float
from .results import ParseCounters


def _json_fields(obj: dict[str, Any], c: ParseCounters) -> list[tuple[str, Any]]:
    """(name, raw value) of a JSON object, one nesting level flattened as ``outer.inner``."""
    out: list[tuple[str, Any]] = []
    for k, v in obj.items():
        if isinstance(v, (dict, list)):
            items = v.items() if isinstance(v, dict) else enumerate(v)
            for k2, v2 in items:
                if isinstance(v2, (dict, list)):
                    c.values_invalid += 1  # deeper than one level
                else:
                    out.append((f"{k}.{k2}", v2))
        else:
            out.append((k, v))
    return out


_JSON_DECODE = json.JSONDecoder().decode
_JSON_RAW = json.JSONDecoder().raw_decode  # no whitespace regexes: the common case


def json_object_of(line: bytes) -> Any:
    """The JSON value of a UTF-8 line, or None if it is not valid JSON."""
    try:
        text = line.decode()
    except UnicodeDecodeError:
        return None
    try:
        obj, end = _JSON_RAW(text)
    except (ValueError, RecursionError):
        if not text[:1].isspace():
            return None
        try:  # raw_decode does not skip leading whitespace; decode does
            return _JSON_DECODE(text)
        except (ValueError, RecursionError):
            return None
    if end != len(text) and text[end:].strip():
        return None  # trailing garbage
    return obj


_JSON_PLAIN = frozenset((int, float))  # not bool: True is 1.0, but takes the careful path


def _json_number(v: Any) -> float | None:
    if isinstance(v, (bool, int, float)):
        try:
            return float(v)
        except OverflowError:
            return None
    if isinstance(v, str):
        return to_float(v)
    return None


class JsonFormat:
    """JSON lines -> (C, N) values and device times, into a shared channel table.

    A flat object whose key order was seen before and whose values are all plain
    numbers skips the per-key work (its channel indices are cached by key order).
    """

    def __init__(self, table: ChannelTable, counters: ParseCounters):
        self.table = table
        self.counters = counters
        self._layouts: dict[tuple[str, ...], list[int]] = {}

    def parse(self, lines: list[bytes]) -> tuple[np.ndarray, np.ndarray | None]:
        c = self.counters
        counts: list[int] = []
        idx: list[int] = []
        vals: list[Any] = []
        layouts = self._layouts
        for line in lines:
            obj = json_object_of(line)
            if type(obj) is not dict:
                c.discard(line)
                continue
            # Fast path: a flat object with a key order seen before, all values int/float.
            lay = layouts.get(tuple(obj))
            if lay is not None:
                vs = list(obj.values())
                if _JSON_PLAIN.issuperset(map(type, vs)):
                    idx.extend(lay)
                    vals.extend(vs)
                    counts.append(len(lay))
                    continue
            k = self._object(obj, idx, vals)
            if k is None:
                c.malformed(line)
            else:
                counts.append(k)
        c.lines_ok += len(counts)
        try:
            arr = np.asarray(vals, dtype=np.float64)
        except OverflowError:  # an integer beyond float range (fast path): NaN, counted
            arr = np.empty(len(vals))
            for j, v in enumerate(vals):
                try:
                    arr[j] = v
                except OverflowError:
                    arr[j] = math.nan
                    c.values_invalid += 1
        return self.table.scatter(counts, idx, arr, c)

    def _object(self, obj: dict[str, Any], idx: list[int], vals: list[Any]) -> int | None:
        """Append one object's (index, value) pairs; the count, or None if none is usable."""
        c = self.counters
        items = _json_fields(obj, c)
        k = 0
        usable = False
        cacheable = len(items) == len(obj)  # flat
        for name, raw in items:
            v = _json_number(raw)
            cacheable = cacheable and type(raw) in _JSON_PLAIN
            i = self.table.label_index(name, v)
            if i is None:
                c.values_invalid += 1
                cacheable = False
                continue
            if i != REJECTED:
                usable = True
            if v is None:
                c.values_invalid += 1
                v = math.nan
            idx.append(i)
            vals.append(v)
            k += 1
        if not usable:
            del idx[len(idx) - k :], vals[len(vals) - k :]
            c.labels_rejected += k
            return None
        if cacheable:
            if len(self._layouts) >= 64:
                self._layouts.clear()
            self._layouts[tuple(obj)] = idx[len(idx) - k :]
        return k
