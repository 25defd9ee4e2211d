"""Recordings: every batch kept in an MCAP file, read back into numpy, exported.

    from sensorstream import recording
    with recording.open("run.mcap") as rec:
        for s in rec.streams:
            t, v = s.read()

See docs/recording.md. `writer` records (a hub subscriber that never blocks
the live path), `reader` reads (finished or crash-truncated files), `export`
turns a recording into CSV/npz/Parquet/Foxglove files, `recover` rewrites a
truncated file with a summary.
"""

from .reader import RecordedStream, Recording, RecordingError, open  # noqa: A004

__all__ = ["open", "Recording", "RecordedStream", "RecordingError"]
