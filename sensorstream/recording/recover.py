"""`sensorstream recover FILE`: give a truncated recording its summary back.

A recording cut short (SIGKILL, power loss, a full disk) has every complete
chunk but no summary, so tools that need the summary (mcap's `make_reader`,
Foxglove's seeking) cannot open it. Recovery copies every complete chunk's
messages, in order and with their channels and drop counts, into a new file
that ends with a proper summary and indexes; the broken tail is left out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mcap.writer import CompressionType, Writer

from .. import __version__
from .format import DROPS_METADATA, PROFILE
from .reader import Recording


@dataclass
class Recovered:
    chunks: int
    messages: int
    dropped_bytes: int  # of the input that could not be used (the cut-off tail)
    had_summary: bool


def recover(src: str | os.PathLike, dst: str | os.PathLike) -> Recovered:
    """Write `dst`: every complete chunk of `src`, with a summary. `src` is not changed."""
    src, dst = Path(src), Path(dst)
    with Recording(src) as rec, open(dst, "wb") as f:
        w = Writer(f, chunk_size=1 << 62, compression=CompressionType.ZSTD)
        w.start(profile=PROFILE, library=f"sensorstream/{__version__} (recovered)")
        new_id: dict[int, int] = {}
        messages = 0
        used = 8
        for chunk in rec.chunks:
            used += chunk.length
            for cid, seq, log_ns, pub_ns, data in rec.chunk_messages(chunk):
                if cid not in new_id:
                    ch = rec.channels.get(cid)
                    if ch is None:
                        continue  # a message whose channel record was lost: unreadable anyway
                    new_id[cid] = w.register_channel(ch.topic, ch.message_encoding, 0, dict(ch.metadata))
                w.add_message(new_id[cid], log_time=log_ns, data=bytes(data), publish_time=pub_ns, sequence=seq)
                messages += 1
            w.flush()  # one output chunk per input chunk
        if rec.drops:
            w.add_metadata(DROPS_METADATA, {k: str(v) for k, v in rec.drops.items()})
        w.finish()
        return Recovered(chunks=len(rec.chunks), messages=messages, dropped_bytes=0 if rec.complete else max(0, rec.size - used),
                         had_summary=rec.complete)
