"""The thin piece every source shares: samples in, batches published to the hub.

A source owns one `StreamFeed` per stream. `push` is synchronous and cheap (it
copies a block of samples into the batcher); batches that close are published
at once. `run_flusher` is the task that closes a batch when its window runs out
while the source is quiet (serial data arrives whenever the device sends it).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import trio

from .batching import Batcher, SampleBatch
from ..hub import Hub
from ..protocol import Channel, StreamInfo


class StreamFeed:
    def __init__(
        self,
        hub: Hub,
        id: str,
        channels: Iterable[Channel],
        *,
        rate_hz: float | None = None,
        device: str = "",
        window_s: float = 0.05,
        max_samples: int = 4096,
        commands: bool = False,
        actions: tuple[dict, ...] = (),
    ):
        self.hub = hub
        self.info: StreamInfo = hub.add_stream(id, channels, rate_hz=rate_hz, device=device, commands=commands, actions=actions)
        self.key = self.info.key
        # Continue the seq of a stream that existed before (a replugged device).
        self.batcher = Batcher(len(self.info.channels), window_s, max_samples, first_seq=hub.next_seq(self.key))
        self._wake = trio.Event()

    @property
    def channels(self) -> tuple[Channel, ...]:
        return self.info.channels

    def push(self, timestamps: np.ndarray, values: np.ndarray) -> None:
        if len(timestamps) == 0:
            return
        for batch in self.batcher.add(timestamps, values, trio.current_time()):
            self._publish(batch)
        self._wake.set()

    def flush(self) -> None:
        batch = self.batcher.flush()
        if batch is not None:
            self._publish(batch)

    def set_channels(self, channels: Iterable[Channel]) -> None:
        """Add channels. Pending samples go out under the old layout first, then the
        `stream` update, then batches with the new layout: a subscriber always hears
        about a channel before it sees it in data."""
        channels = tuple(channels)
        for batch in self.batcher.set_channels(len(channels)):
            self._publish(batch)
        self.info = self.hub.update_stream(self.key, channels=channels)

    def set_status(self, status: str) -> None:
        if status != "live":
            self.flush()
        self.info = self.hub.update_stream(self.key, status=status)

    def _publish(self, batch: SampleBatch) -> None:
        self.hub.publish(self.key, batch.seq, batch.timestamps, batch.values)

    async def run_flusher(self) -> None:
        while True:
            due = self.batcher.due_at()
            if due is None:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            await trio.sleep_until(due)
            batch = self.batcher.poll(trio.current_time())
            if batch is not None:
                self._publish(batch)
