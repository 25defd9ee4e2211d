"""The channel table every parser keeps (:class:`ChannelTable`): names, scale/offset, labels.

One table per parser. Text formats grow it as labels and columns appear (up to
``max_channels``; the rest are counted as ``labels_rejected``); the binary format
fills it once from its record's fields. Scale and offset are looked up by channel
name first, then by output position, when a channel is added.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .results import ParseCounters

#: Default most channels per stream; labels past it are counted in ``labels_rejected``.
MAX_CHANNELS = 64
#: Rejected labels remembered (so lines with them stay on the fast paths) before
#: they are forgotten at once: a device that sends ever-new labels (a counter or
#: an ID in the key, a wrong baud rate) must not grow the parser without bound.
MAX_REJECTED_LABELS = 1024

TS = -2  # index of the timestamp field in a layout
REJECTED = -1  # index of a label that found no channel slot

Affine = Mapping[str, float] | Sequence[float] | None


def _as_lookup(spec: Affine) -> tuple[dict[str, float], list[float]]:
    if spec is None:
        return {}, []
    if isinstance(spec, Mapping):
        return {str(k): float(v) for k, v in spec.items()}, []
    return {}, [float(v) for v in spec]


class ChannelTable:
    """Output channels in order, their affine correction, and label -> channel index."""

    def __init__(self, *, max_channels: int, scale: Affine = None, offset: Affine = None,
                 timestamp_field: str | None = None):
        self.max_channels = max_channels
        self.timestamp_field = timestamp_field
        self._scale_by_name, self._scale_by_pos = _as_lookup(scale)
        self._offset_by_name, self._offset_by_pos = _as_lookup(offset)
        self.names: list[str] = []
        self.scale = np.ones(0)
        self.offset = np.zeros(0)
        self.affine = False  # any scale != 1 or offset != 0: the output needs correcting
        # labels/json: label -> channel index (or TS / REJECTED).
        self.index: dict[str, int] = {}
        self.rejected = 0  # entries of index that are REJECTED

    def __len__(self) -> int:
        return len(self.names)

    def add(self, name: str) -> int:
        i = len(self.names)
        self.names.append(name)
        s = self._scale_by_name.get(name, self._scale_by_pos[i] if i < len(self._scale_by_pos) else 1.0)
        o = self._offset_by_name.get(name, self._offset_by_pos[i] if i < len(self._offset_by_pos) else 0.0)
        self.scale = np.append(self.scale, s)
        self.offset = np.append(self.offset, o)
        self.affine = bool(np.any(self.scale != 1.0) or np.any(self.offset != 0.0))
        return i

    def clear(self) -> None:
        """Forget every channel (auto-detection settled on CSV, which names columns itself)."""
        self.index.clear()
        self.rejected = 0
        self.names.clear()
        self.scale, self.offset = np.ones(0), np.zeros(0)

    def declare(self, names: Sequence[str]) -> None:
        """Channels known up front (labels/json), in output order."""
        if self.timestamp_field is not None:
            self.index[self.timestamp_field] = TS
        for name in names:
            if name not in self.index and len(self.names) < self.max_channels:
                self.index[name] = self.add(name)

    def label_index(self, label: str, value: float | None) -> int | None:
        """Channel index for a label; creates the channel on its first numeric value."""
        i = self.index.get(label)
        if i is not None:
            return i
        if value is None:
            return None
        if len(self.names) >= self.max_channels:
            if self.rejected >= MAX_REJECTED_LABELS:
                for k in [k for k, i in self.index.items() if i == REJECTED]:
                    del self.index[k]
                self.rejected = 0
            self.index[label] = REJECTED
            self.rejected += 1
            return REJECTED
        i = self.index[label] = self.add(label)
        return i

    def scatter(self, counts: list[int], idx: list[int], vals: np.ndarray,
                c: ParseCounters) -> tuple[np.ndarray, np.ndarray | None]:
        """Place per-line (index, value) pairs into a (C, N) array; pull out the timestamp."""
        n = len(counts)
        out = np.full((len(self.names), n), np.nan)
        sample = np.repeat(np.arange(n), counts)
        ix = np.asarray(idx, dtype=np.intp)
        ch = ix >= 0
        out[ix[ch], sample[ch]] = vals[ch]
        device = None
        if self.timestamp_field is not None:
            device = np.full(n, np.nan)
            ts = ix == TS
            device[sample[ts]] = vals[ts]
        rejected = int(np.count_nonzero(ix == REJECTED))
        if rejected:
            c.labels_rejected += rejected
        return out, device
