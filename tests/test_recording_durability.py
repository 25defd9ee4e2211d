"""Durability: the recorder fdatasyncs its file from the worker thread, at most once a
second while data arrives and whenever a file is closed (docs/recording.md#what-a-crash-or-a-power-loss-costs).
Counted, not timed: a power cut is not simulated."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import trio

from sensorstream import recording
from sensorstream.hub import LocalHub
from sensorstream.protocol import encode_batch
from sensorstream.recording.writer import Recorder, RecorderConfig

from .test_recording_read import T0, WIDE


def test_the_recording_is_synced_at_most_once_a_second_and_when_closed(tmp_path, monkeypatch):
    synced = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: synced.append(fd) or real(fd))
    rec = Recorder(RecorderConfig(directory=tmp_path))  # the worker's step, run here with the clock it is given
    t = T0 + np.arange(10) / 1000
    payload = encode_batch(1, 0, t, np.zeros((5, 10), np.float32))
    for k in range(11):  # a write tick every 0.2 s for 2 s
        rec._write([(WIDE, k, float(t[-1]), 10, payload, time.time())], k * 0.2, None, False)
    assert len(synced) == 3  # at 0, 1.0 and 2.0 s: at most once a second while data arrives
    assert rec.stats.syncs == 3 + 1  # (+ the directory, once for the new file)
    rec._write([], 2.2, None, True)  # shutdown: the summary is synced too
    assert len(synced) == 4 and rec.stats.syncs == 5
    with recording.open(rec.stats.files[0]) as r:
        assert r.complete and len(r.stream("dev/wide").read()[0]) == 110


async def test_syncs_happen_in_the_worker_thread_never_the_trio_thread(tmp_path, monkeypatch):
    threads = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: threads.append(threading.get_ident()) or real(fd))
    hub = LocalHub()
    key = hub.add_stream("dev/wide", WIDE.channels).key
    rec = Recorder(RecorderConfig(directory=tmp_path, write_interval=0.01, chunk_age_s=0.05, sync_interval=0.05), hub=hub)
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        with trio.fail_after(30):
            seq = 0
            while len(threads) < 2:  # the file's first sync, then one after a chunk was written
                hub.publish(key, seq, T0 + seq + np.arange(10) / 10, np.zeros((5, 10), np.float32))
                seq += 1
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert len(threads) >= 3 and rec.stats.to_json()["syncs"] >= 4  # + the close, + the directory
    assert threading.get_ident() not in threads
