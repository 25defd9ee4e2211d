import numpy as np
import trio
import trio.testing

from sensorstream.hub import LocalHub
from sensorstream.protocol import decode_batch
from sensorstream.sources.simulator import SignalModel, default_profiles, run_simulator


class Sink:
    def __init__(self):
        self.batches = []

    def deliver(self, frame):
        self.batches.append(decode_batch(frame.payload))

    def notify(self, text):
        pass


def test_default_set_has_three_realistic_devices():
    profiles = {p.id: p for p in default_profiles()}
    assert set(profiles) == {"sim/env", "sim/imu", "sim/power"}
    assert profiles["sim/imu"].rate_hz == 200 and len(profiles["sim/imu"].channels) == 6
    env = SignalModel(profiles["sim/env"], seed=1).generate(0, 1000)
    assert 15 < env[0].mean() < 30 and 900 < env[2].mean() < 1100
    imu = SignalModel(profiles["sim/imu"], seed=1).generate(0, 2000)
    assert abs(imu[2].mean() - 9.81) < 0.2  # gravity on z
    power = SignalModel(profiles["sim/power"], seed=1).generate(0, 100_000)
    assert power[1].max() > 4  # current spikes happen


def test_same_seed_same_data_whatever_the_block_sizes():
    p = default_profiles()[1]
    a = SignalModel(p, seed=7).generate(0, 500)
    m = SignalModel(p, seed=7)
    b = np.hstack([m.generate(i, 50) for i in range(0, 500, 50)])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, SignalModel(p, seed=8).generate(0, 500))


def test_pacing_does_not_drift_over_an_hour():
    """An hour of virtual time at 200 Hz: sample count within 0.1 % of rate × elapsed, seq gap-free."""
    clock = trio.testing.MockClock(autojump_threshold=0)
    profile = default_profiles()[1]
    sink = Sink()

    async def main():
        hub = LocalHub()
        hub.attach(sink)
        async with trio.open_nursery() as n:
            await n.start(lambda task_status: run_simulator(hub, profile, seed=1, window_s=0.5, task_status=task_status))
            hub.subscribe(sink, ["sim/imu"])
            start = trio.current_time()
            await trio.sleep(3600)
            elapsed = trio.current_time() - start
            n.cancel_scope.cancel()
        return elapsed

    elapsed = trio.run(main, clock=clock)
    total = sum(len(b.timestamps) for b in sink.batches)
    assert abs(total - 200 * elapsed) <= 0.001 * 200 * elapsed
    seqs = [b.seq for b in sink.batches]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    ts = np.concatenate([b.timestamps for b in sink.batches])
    assert np.all(np.diff(ts) > 0)
    np.testing.assert_allclose(np.diff(ts), 1 / 200, atol=1e-6)  # float64 epoch seconds resolve ~0.2 µs
