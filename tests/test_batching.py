import numpy as np
import pytest

from sensorstream.ingest.batching import Batcher


def block(t0, n, c=2):
    ts = t0 + np.arange(n, dtype=np.float64)
    return ts, np.vstack([ts + k for k in range(c)]).astype(np.float32)


def test_window_closes_batch_and_seq_increments_by_one():
    b = Batcher(2, window_s=0.05, max_samples=100)
    assert b.add(*block(0, 3), now=10.0) == []
    assert b.due_at() == pytest.approx(10.05)
    assert b.poll(10.049) is None
    out = b.poll(10.05)
    assert out.seq == 0 and len(out.timestamps) == 3
    b.add(*block(3, 1), now=11.0)
    assert b.poll(11.06).seq == 1
    assert b.poll(20.0) is None and b.due_at() is None


def test_sample_cap_splits_large_blocks_without_losing_samples():
    b = Batcher(2, window_s=1, max_samples=4)
    ts, vals = block(0, 10)
    out = b.add(ts, vals, now=0)
    assert [len(x.timestamps) for x in out] == [4, 4]
    rest = b.flush()
    allts = np.concatenate([x.timestamps for x in out] + [rest.timestamps])
    np.testing.assert_array_equal(allts, ts)
    np.testing.assert_array_equal(np.hstack([x.values for x in out] + [rest.values]), vals)
    assert [x.seq for x in out] + [rest.seq] == [0, 1, 2]


def test_emitted_batches_do_not_alias_the_reused_buffer():
    b = Batcher(1, window_s=1, max_samples=2)
    first = b.add(*block(0, 2, 1), now=0)[0]
    b.add(*block(100, 2, 1), now=0)
    assert first.timestamps.tolist() == [0, 1]


def test_adding_channels_flushes_old_layout_first():
    b = Batcher(1, window_s=1, max_samples=10, first_seq=41)
    b.add(*block(0, 2, 1), now=0)
    out = b.set_channels(3)
    assert len(out) == 1 and out[0].values.shape == (1, 2) and out[0].seq == 41
    b.add(*block(2, 1, 3), now=0)
    assert b.flush().values.shape == (3, 1)
    with pytest.raises(ValueError):
        b.set_channels(2)


def test_shape_mismatch_is_rejected():
    b = Batcher(2)
    with pytest.raises(ValueError):
        b.add(np.zeros(3), np.zeros((1, 3), np.float32), now=0)
