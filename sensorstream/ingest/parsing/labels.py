"""``labels``: ``ax:0.1 ay=0.2, Temperature: 23.6`` -- label/value pairs (Arduino Serial Plotter)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import chain

import numpy as np

from .channels import REJECTED, ChannelTable
from .numbers import scan_numbers, to_float
from .results import ParseCounters

_LABEL = r"[^\s,;:=0-9+\-.][^\s,;:=]*"
_VALUE = r"[^\s,;:=]+"
_PAIR = rf"({_LABEL})\s*[:=]\s*({_VALUE})"
_PAIR_RE = re.compile(_PAIR)
_PAIR_NC = rf"{_LABEL}\s*[:=]\s*{_VALUE}"
_LABELS_LINE_RE = re.compile(rf"[\s,;]*{_PAIR_NC}(?:[\s,;]+{_PAIR_NC})*[\s,;]*")


@dataclass(frozen=True, slots=True)
class _Layout:
    """A labels line shape seen before: its labels in order, as a regex and channel indices."""

    regex: re.Pattern[bytes]  # MULTILINE, ^...$, one group per value; no \\s (it would cross lines)
    index: list[int]


def _good_label(label: str) -> bool:
    return label.isprintable() and "\ufffd" not in label


def label_pairs(line: bytes) -> list[tuple[str, bytes]] | None:
    """The (label, value) pairs of a labels-format line, or None if it is not one."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not _LABELS_LINE_RE.fullmatch(text):
        return None
    pairs = _PAIR_RE.findall(text)
    if not all(_good_label(lab) for lab, _ in pairs):
        return None
    return [(lab, val.encode()) for lab, val in pairs]


class LabelsFormat:
    """Lines of label/value pairs -> (C, N) values and device times, into a shared channel table.

    Each line shape (its labels in order) is compiled once into a regex; while a
    device keeps sending the last shape, one ``findall`` over the whole chunk both
    checks every line and hands over all values.
    """

    def __init__(self, table: ChannelTable, counters: ParseCounters):
        self.table = table
        self.counters = counters
        self._layouts: dict[tuple[str, ...], _Layout] = {}
        self._layout: _Layout | None = None

    def _layout_for(self, labels: tuple[str, ...], index: list[int]) -> _Layout:
        """The cached layout of a line with these labels, at these channel indices
        (passed in: a rejected label may already be forgotten by the table's index)."""
        lay = self._layouts.get(labels)
        if lay is None:
            value = rb"[ \t]*[:=][ \t]*([^\s,;:=]+)"
            body = rb"[ \t,;]+".join(re.escape(lab.encode()) + value for lab in labels)
            lay = _Layout(re.compile(rb"^[ \t,;]*" + body + rb"[ \t,;]*$", re.MULTILINE), list(index))
            if len(self._layouts) >= 64:
                self._layouts.clear()
            self._layouts[labels] = lay
        return lay

    def parse(self, lines: list[bytes]) -> tuple[np.ndarray, np.ndarray | None]:
        c = self.counters
        layout = self._layout
        if layout is not None:
            # Steady state: every line has the last layout. One findall over the chunk
            # (the pattern cannot cross a line) tells, and hands over all the values.
            found = layout.regex.findall(b"\n".join(lines))
            if len(found) == len(lines):
                c.lines_ok += len(lines)
                k = len(layout.index)
                toks = list(chain.from_iterable(found)) if k > 1 else found
                vals, invalid, _ = scan_numbers(b" ".join(toks))
                c.values_invalid += int(np.count_nonzero(invalid))
                return self.table.scatter([k] * len(lines), layout.index * len(lines), vals, c)
        counts: list[int] = []
        idx: list[int] = []
        toks = []
        for line in lines:
            if layout is not None:
                m = layout.regex.fullmatch(line)
                if m is not None:
                    toks.extend(m.groups())
                    idx.extend(layout.index)
                    counts.append(len(layout.index))
                    continue
            pairs = label_pairs(line)
            if not pairs:
                c.discard(line)
                continue
            line_idx = []
            line_toks = []
            for lab, val in pairs:
                i = self.table.label_index(lab, to_float(val))
                if i is not None:
                    line_idx.append(i)
                    line_toks.append(val)
                else:
                    c.values_invalid += 1  # a new label whose first value is not a number
            if not any(i != REJECTED for i in line_idx):
                c.malformed(line)
                c.labels_rejected += len(line_idx)
                continue
            if len(line_idx) == len(pairs):  # every label known: cache the line's layout
                layout = self._layout = self._layout_for(tuple(lab for lab, _ in pairs), line_idx)
            toks.extend(line_toks)
            idx.extend(line_idx)
            counts.append(len(line_idx))
        c.lines_ok += len(counts)
        vals, invalid, _ = scan_numbers(b" ".join(toks))
        c.values_invalid += int(np.count_nonzero(invalid))
        return self.table.scatter(counts, idx, vals, c)
