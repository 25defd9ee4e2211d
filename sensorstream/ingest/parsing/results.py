"""What a parser hands back (:class:`Parsed`) and what it counts (:class:`ParseCounters`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np


@dataclass(frozen=True, slots=True)
class Parsed:
    """One feed's worth of samples.

    ``values`` has one row per entry of the parser's ``channel_names`` at the time
    ``feed`` returned (NaN where a sample lacks a channel). If ``channels_changed``,
    channel_names grew during this feed: announce the new list before publishing.
    """

    timestamps: np.ndarray  # float64 (N,), Unix seconds, non-decreasing
    values: np.ndarray  # float32 (C, N)
    channels_changed: bool = False

    def __len__(self) -> int:
        return self.timestamps.shape[0]


@dataclass(slots=True)
class ParseCounters:
    """What a parser saw. Every line (frame) ending lands in exactly one ``lines_*`` count."""

    lines_ok: int = 0  # produced a sample
    lines_malformed: int = 0  # not in the stream's format, or no usable field
    lines_oversize: int = 0  # longer than max_line (max_frame)
    lines_empty: int = 0  # blank line / empty frame: ignored, not an error
    lines_partial: int = 0  # the first line after connecting, discarded
    values_invalid: int = 0  # a field of a good line that was not a number: NaN in the output
    labels_rejected: int = 0  # values whose new label found no channel slot (max_channels)
    bytes_discarded: int = 0  # bytes of discarded lines (partial, oversize, malformed)
    #: When a list, malformed text lines are also appended to it: the device's console
    #: (banners, replies to commands). Its owner empties it after every feed.
    console: list[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def lines_seen(self) -> int:
        return self.lines_ok + self.lines_malformed + self.lines_oversize + self.lines_empty + self.lines_partial

    def malformed(self, line: bytes) -> None:
        self.lines_malformed += 1
        self.bytes_discarded += len(line)
        if self.console is not None:
            self.console.append(line)

    def discard(self, line: bytes) -> None:
        """A line that gave no sample: empty if blank, else malformed (its bytes discarded)."""
        if line.strip():
            self.malformed(line)
        else:
            self.lines_empty += 1

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "console"}


def empty(n_channels: int) -> Parsed:
    return Parsed(np.empty(0, np.float64), np.empty((n_channels, 0), np.float32))
