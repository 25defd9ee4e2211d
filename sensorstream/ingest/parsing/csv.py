"""``csv``: ``1.0,2.5,-3`` -- numbers separated by comma, semicolon, tab or spaces.

Columns are named by ``channel_names`` (``ch<i>`` past them); one column may be the
device timestamp. A device that changes its column count for CSV_RELAYOUT_AFTER
lines in a row gets a new layout (channels only ever grow).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from itertools import chain

import numpy as np

from .channels import ChannelTable
from .numbers import scan_numbers, to_float
from .results import ParseCounters

#: This many consecutive lines with the same new column count change the layout.
CSV_RELAYOUT_AFTER = 8
#: Up to this many lines, a CSV block whose lines all fit the layout skips the bulk
#: path (see CsvFormat._uniform). Measured crossover: ~300 lines of 6 columns.
CSV_UNIFORM_LINES = 256
SEPARATORS = bytes.maketrans(b",;\t\v\f", b"     ")
_FIELD_SPLIT = re.compile(rb"[,;]")


def looks_like_csv(line: bytes) -> bool:
    """Every token of a (stripped) line is a number: what auto-detection calls CSV."""
    toks = line.translate(SEPARATORS).split()
    return bool(toks) and all(to_float(t) is not None for t in toks)


class CsvFormat:
    """CSV lines -> (C, N) values and device times, into a shared channel table."""

    def __init__(self, table: ChannelTable, counters: ParseCounters, names: Sequence[str]):
        self.table = table
        self.counters = counters
        self._names_in = list(names)
        self._ncols: int | None = None
        self._ts_col: int | None = None
        self._col_of_channel: list[int] = []
        self._relayout_cols = 0
        self._relayout_run = 0

    def _layout(self, ncols: int) -> None:
        """Set the column count; name any new columns; channels only ever grow."""
        self._ncols = ncols
        names = self._names_in + [f"ch{i}" for i in range(len(self._names_in), ncols)]
        ts_field = self.table.timestamp_field
        if ts_field is not None and ts_field in names[:ncols]:
            self._ts_col = names.index(ts_field)
        for col in range(ncols):
            if col != self._ts_col and names[col] not in self.table.names and len(self.table) < self.table.max_channels:
                self.table.add(names[col])
                self._col_of_channel.append(col)

    def _slow(self, line: bytes) -> tuple[list[float], int] | None:
        """One line the bulk path could not take: fields (NaN if bad) and the bad count."""
        if b"," in line or b";" in line:
            raw = [f.strip() for f in _FIELD_SPLIT.split(line)]
            if raw and not raw[-1]:
                raw.pop()  # a trailing separator
        else:
            raw = line.split()
        vals = [to_float(f) if f else None for f in raw]
        bad = sum(v is None for v in vals)
        if bad == len(vals):
            return None
        return [math.nan if v is None else v for v in vals], bad

    def parse(self, lines: list[bytes]) -> tuple[np.ndarray, np.ndarray | None]:
        if self._ncols is None and self._names_in:
            self._layout(len(self._names_in))
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        while lines:
            block, lines = self._block(lines)
            if block is not None:
                parts.append((self._columns(block), block))
        width = len(self.table)
        n = sum(p.shape[0] for _, p in parts)
        out = np.full((width, n), np.nan)
        at = 0
        for v, p in parts:  # a layout change in the chunk may have added channels since
            out[: v.shape[0], at : at + v.shape[1]] = v
            at += v.shape[1]
        if self._ts_col is None:
            return out, None
        ts = self._ts_col
        device = [p[:, ts] if ts < p.shape[1] else np.full(p.shape[0], np.nan) for _, p in parts]
        return out, np.concatenate(device) if device else np.empty(0)

    def _block(self, lines: list[bytes]) -> tuple[np.ndarray | None, list[bytes]]:
        """Parse lines until the column layout changes: ((N, ncols) rows, lines left over).

        Lines with the expected number of columns are parsed in bulk. The others go
        through :meth:`_slow` in order; CSV_RELAYOUT_AFTER consecutive ones with the
        same new count change the layout, and the rest of the chunk is parsed again.
        """
        if self._ncols is not None and len(lines) <= CSV_UNIFORM_LINES:
            block = self._uniform(lines, self._ncols)
            if block is not None:
                return block, []
        c = self.counters
        n = len(lines)
        buf = b"\n".join(lines).translate(SEPARATORS)
        vals, invalid, line_of = scan_numbers(buf)
        counts = np.bincount(line_of, minlength=n)
        n_bad = np.bincount(line_of[invalid], minlength=n)
        usable = (counts > 0) & (n_bad < counts)
        if self._ncols is None:
            first = np.flatnonzero(usable)
            if first.size == 0:
                self._count_discarded(lines, counts)
                return None, []
            self._layout(int(counts[first[0]]))
        ncols = self._ncols
        assert ncols is not None
        good = usable & (counts == ncols)
        good_upto = np.cumsum(good)  # good lines up to and including each line
        end = n
        slow_rows: dict[int, list[float]] = {}
        prev = -1
        relayout = False
        for i in np.flatnonzero(~good & (counts > 0)).tolist():
            if good_upto[i] > (good_upto[prev] if prev >= 0 else 0):
                self._relayout_run = 0  # a good line came between: not a new layout
            prev = i
            res = self._slow(lines[i])
            if res is not None and len(res[0]) == ncols:  # e.g. an empty field: "1,,3"
                slow_rows[i] = res[0]
                c.values_invalid += res[1]
                self._relayout_run = 0
                continue
            c.malformed(lines[i])
            if res is None:
                continue
            width = len(res[0])
            if width != self._relayout_cols:
                self._relayout_cols, self._relayout_run = width, 0
            self._relayout_run += 1
            if self._relayout_run >= CSV_RELAYOUT_AFTER:
                end, relayout = i + 1, True
                break
        if good_upto[end - 1] > (good_upto[prev] if prev >= 0 else 0):
            self._relayout_run = 0
        good[end:] = False
        c.lines_empty += int(np.count_nonzero(counts[:end] == 0))
        n_good = int(good_upto[end - 1])
        c.lines_ok += n_good + len(slow_rows)
        c.values_invalid += int(n_bad[good].sum())
        block = vals[good[line_of]].reshape(n_good, ncols)
        if slow_rows:
            order = np.argsort(np.concatenate([np.flatnonzero(good), list(slow_rows)]), kind="stable")
            block = np.concatenate([block, np.array(list(slow_rows.values()))])[order]
        if relayout:
            self._relayout_run = 0
            self._layout(self._relayout_cols)
        return (block if len(block) else None), lines[end:]

    def _uniform(self, lines: list[bytes], ncols: int) -> np.ndarray | None:
        """The steady state of a device, in a small read: every line has `ncols`
        numbers. Then `float()` per field and one array at the end cost a third of
        the bulk path's ~40 numpy calls, whose fixed cost dominates below a few
        hundred lines (a serial read every 10 ms at 921,600 baud is ~20 lines).
        None for anything else (a short or long line, an empty one, a field that is
        not a number): the general path then does the accounting. Same tokens and
        the same values as the general path, which splits on the same separators
        and equals `float()` bit for bit."""
        rows = [line.translate(SEPARATORS).split() for line in lines]
        for r in rows:
            if len(r) != ncols:
                return None
        try:
            vals = list(map(float, chain.from_iterable(rows)))
        except ValueError:
            return None
        self.counters.lines_ok += len(rows)
        self._relayout_run = 0  # good lines: no layout change under way
        return np.array(vals, dtype=np.float64).reshape(len(rows), ncols)

    def _count_discarded(self, lines: list[bytes], counts: np.ndarray) -> None:
        c = self.counters
        for line, k in zip(lines, counts.tolist()):
            if k:
                c.malformed(line)
            else:
                c.lines_empty += 1

    def _columns(self, block: np.ndarray) -> np.ndarray:
        """(N, ncols) rows -> (C', N) channel values; C' = channels at the time, NaN past ncols."""
        n, ncols = block.shape
        cols = np.asarray(self._col_of_channel, dtype=np.intp)
        out = np.full((len(cols), n), np.nan)
        have = cols < ncols
        out[have] = block[:, cols[have]].T
        unmapped = ncols - int(np.count_nonzero(have)) - (self._ts_col is not None and self._ts_col < ncols)
        if unmapped > 0:  # columns past max_channels
            self.counters.labels_rejected += unmapped * n
        return out

