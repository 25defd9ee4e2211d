"""Built-in simulated sensors.

A simulator profile (devices/sim-*.toml) describes each channel as a signal:

    value = base + amplitude * sin(2π t / period_s + phase) + random walk(drift)
            + gaussian noise + occasional spikes (spike_prob per sample, spike_size)

`SignalModel` is pure: it generates any block of samples with numpy in one go,
deterministically from a seed. `run_simulator` is the trio task that paces it
against the clock: it derives how many samples are due from the time elapsed
since it started (never by adding up tick lengths), so it cannot drift.
"""

from __future__ import annotations

import logging
import time
import tomllib
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import trio

from ..alerts.rules import AlertRule, parse_rules
from ..hub import Hub
from ..protocol import Channel
from ..ingest.feed import StreamFeed

log = logging.getLogger(__name__)

DEFAULT_PROFILES = ("sim-env.toml", "sim-imu.toml", "sim-power.toml")


@dataclass(frozen=True)
class SimProfile:
    id: str
    device: str
    rate_hz: float
    channels: tuple[Channel, ...]
    params: tuple[dict[str, float], ...]  # one signal description per channel
    alerts: tuple[AlertRule, ...] = ()  # the profile's [[alerts]] (the server evaluates them)

    def with_rate(self, rate_hz: float) -> "SimProfile":
        return replace(self, rate_hz=float(rate_hz))

    def with_id(self, id: str) -> "SimProfile":
        return replace(self, id=id, alerts=tuple(replace(r, stream=id) for r in self.alerts))


_SIGNAL_KEYS = ("base", "amplitude", "period_s", "phase", "drift", "noise", "spike_prob", "spike_size")


def parse_profile(doc: dict[str, Any]) -> SimProfile:
    stream = doc["stream"]
    rate = float(stream["rate_hz"])
    if not rate > 0:
        raise ValueError("rate_hz must be > 0")
    chans = doc.get("channels") or []
    if not chans:
        raise ValueError("a simulator profile needs at least one [[channels]] entry")
    channels = tuple(Channel(str(c["name"]), str(c.get("unit", ""))) for c in chans)
    params = tuple({k: float(c.get(k, 0.0)) for k in _SIGNAL_KEYS} for c in chans)
    sid = str(stream["id"])
    alerts = tuple(parse_rules(doc.get("alerts"), f"simulator profile {sid}", stream=sid))
    return SimProfile(sid, str(stream.get("device", "")), rate, channels, params, alerts)


def load_profile(path: str | Path) -> SimProfile:
    with open(path, "rb") as f:
        return parse_profile(tomllib.load(f))


def wide_profile(n_channels: int, rate_hz: float, id: str = "sim/wide") -> SimProfile:
    """A synthetic many-channel stream (dashboard and load benchmarks): sines of
    different periods plus noise, one spike in a thousand."""
    channels = tuple(Channel(f"ch{i}", "V") for i in range(n_channels))
    params = tuple(
        {"base": float(i), "amplitude": 0.4, "period_s": 0.5 + 0.37 * i, "phase": 0.3 * i, "drift": 0.0,
         "noise": 0.02, "spike_prob": 0.001, "spike_size": 0.8}
        for i in range(n_channels)
    )
    return SimProfile(id, "sim", float(rate_hz), channels, params)


def devices_dir() -> Path:
    """devices/ in a source checkout, or the copy shipped inside the wheel."""
    try:
        from importlib.resources import files

        p = Path(str(files("sensorstream.devices")))
        if (p / DEFAULT_PROFILES[0]).exists():
            return p
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[2] / "devices"


def default_profiles() -> list[SimProfile]:
    d = devices_dir()
    return [load_profile(d / name) for name in DEFAULT_PROFILES]


class SignalModel:
    """Vectorized, seeded signal generator for one simulated stream.

    The output depends only on the seed and the sample index, not on how the
    samples are split into blocks: each random component has its own generator
    and draws sample-major (n, C), so two blocks of 5 equal one block of 10.
    That is what makes `--seed` reproducible although tick sizes vary with load.
    """

    def __init__(self, profile: SimProfile, seed: int = 0):
        self.profile = profile
        # Seeded per stream id too, so adding a stream does not change the others' data.
        base_seed = [seed, zlib.crc32(profile.id.encode())]
        self.rng_walk, self.rng_noise, self.rng_spike = (np.random.default_rng(base_seed + [k]) for k in range(3))
        p = profile.params
        col = lambda k: np.array([c[k] for c in p], dtype=np.float64)  # noqa: E731
        self.base, self.amp, self.phase = col("base"), col("amplitude"), col("phase")
        period = col("period_s")
        self.omega = np.where(period > 0, 2 * np.pi / np.where(period > 0, period, 1), 0.0)
        self.drift, self.noise = col("drift"), col("noise")
        self.spike_prob, self.spike_size = col("spike_prob"), col("spike_size")
        self.walk = np.zeros(len(p))

    def generate(self, first_index: int, n: int) -> np.ndarray:
        """Values for samples first_index .. first_index+n-1, float32 (C, n)."""
        c = len(self.profile.channels)
        t = ((first_index + np.arange(n)) / self.profile.rate_hz)[:, None]
        v = self.base + self.amp * np.sin(self.omega * t + self.phase)  # (n, C)
        if self.drift.any():
            walk = self.walk + np.cumsum(self.rng_walk.standard_normal((n, c)) * self.drift, axis=0)
            if n:
                self.walk = walk[-1]
            v += walk
        v += self.rng_noise.standard_normal((n, c)) * self.noise
        if self.spike_prob.any():
            v += (self.rng_spike.random((n, c)) < self.spike_prob) * self.spike_size
        return np.ascontiguousarray(v.T, dtype=np.float32)


class Pacer:
    """Which samples are due, from the time elapsed since start (never by adding up
    tick lengths, so a late tick catches up and nothing drifts)."""

    def __init__(self, rate_hz: float, tick_s: float):
        self.rate = rate_hz
        self.tick_s = tick_s
        self.start = trio.current_time()
        self.wall0 = time.time()  # sample i happened at wall0 + i / rate
        self.emitted = 0
        self._next = self.start

    def due(self) -> tuple[int, np.ndarray]:
        """(index of the first due sample, their Unix timestamps); marks them emitted."""
        due = int((trio.current_time() - self.start) * self.rate) + 1
        first, n = self.emitted, max(0, due - self.emitted)
        self.emitted += n
        return first, self.wall0 + (first + np.arange(n)) / self.rate

    async def wait(self) -> None:
        self._next += self.tick_s
        await trio.sleep_until(self._next)


async def run_simulator(
    hub: Hub,
    profile: SimProfile,
    *,
    seed: int = 0,
    window_s: float = 0.05,
    max_samples: int = 4096,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    feed = StreamFeed(hub, profile.id, profile.channels, rate_hz=profile.rate_hz, device=profile.device,
                      window_s=window_s, max_samples=max_samples)
    model = SignalModel(profile, seed)
    pacer = Pacer(profile.rate_hz, window_s)
    task_status.started(feed)
    log.info("simulating %s at %g Hz", profile.id, profile.rate_hz)
    try:
        while True:
            first, ts = pacer.due()
            if len(ts):
                feed.push(ts, model.generate(first, len(ts)))
                # A tick's samples are exactly one window: close the batch now
                # rather than waiting for a flusher to notice.
                feed.flush()
            await pacer.wait()
    finally:
        feed.set_status("disconnected")
