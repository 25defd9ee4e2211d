"""Built-in simulated sensors.

A simulator profile (devices/sim-*.toml) describes each channel as a signal:

    value = base + amplitude * sin(2π t / period_s + phase) + random walk(drift)
            + gaussian noise + occasional spikes (spike_prob per sample, spike_size)

`SignalModel` is pure: it generates any block of samples with numpy in one go,
deterministically from a seed. `run_simulator` is the trio task that paces it
against the clock: it derives how many samples are due from the time elapsed
since it started (never by adding up tick lengths), so it cannot drift.

Simulators take commands like a device would (`SimCommands`, pure): `rate <Hz>`
changes the sample rate, `spike` puts a spike into the next sample, `help` lists
them. Their replies (`OK rate 500`, `ERR ...`) are console lines.
"""

from __future__ import annotations

import logging
import math
import time
import tomllib
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import trio

from ..alerts.rules import AlertRule, parse_rules
from ..commands.port import DevicePort
from ..commands.profile import Action, parse_actions
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
    actions: tuple[Action, ...] = ()  # buttons and sliders for the dashboard ([[actions]])

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
    return SimProfile(sid, str(stream.get("device", "")), rate, channels, params, alerts, parse_actions(doc))


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
        self.rate = profile.rate_hz
        self._t_base, self._i_base = 0.0, 0  # sample _i_base is at _t_base seconds (rate changes)
        self.spikes_owed = 0  # `spike` commands: the next samples get one each

    def set_rate(self, rate_hz: float, at_index: int) -> None:
        """From sample `at_index` on, samples are 1/rate_hz apart (the signal stays continuous)."""
        self._t_base += (at_index - self._i_base) / self.rate
        self._i_base, self.rate = at_index, rate_hz

    def generate(self, first_index: int, n: int) -> np.ndarray:
        """Values for samples first_index .. first_index+n-1, float32 (C, n)."""
        c = len(self.profile.channels)
        t = (self._t_base + (first_index - self._i_base + np.arange(n)) / self.rate)[:, None]
        v = self.base + self.amp * np.sin(self.omega * t + self.phase)  # (n, C)
        if self.drift.any():
            walk = self.walk + np.cumsum(self.rng_walk.standard_normal((n, c)) * self.drift, axis=0)
            if n:
                self.walk = walk[-1]
            v += walk
        v += self.rng_noise.standard_normal((n, c)) * self.noise
        if self.spike_prob.any():
            v += (self.rng_spike.random((n, c)) < self.spike_prob) * self.spike_size
        if self.spikes_owed and n:
            k = min(n, self.spikes_owed)
            # A channel without spike_size spikes by five times its amplitude (or by 1).
            v[:k] += np.where(self.spike_size != 0, self.spike_size, np.where(self.amp != 0, 5 * self.amp, 1.0))
            self.spikes_owed -= k
        return np.ascontiguousarray(v.T, dtype=np.float32)


#: Rates a `rate` command may set: the simulator generates every sample (so not
#: faster), and the stream keeps its nominal rate, by which a slower one would
#: be judged stale between samples.
MIN_SIM_RATE, MAX_SIM_RATE = 1.0, 100_000.0


class SimCommands:
    """What a simulated device does with the lines it is sent (pure): the reply, and
    the change to its model and pacer."""

    def __init__(self, model: "SignalModel", pacer: "Pacer"):
        self.model = model
        self.pacer = pacer

    def feed(self, data: bytes) -> list[str]:
        """One command's bytes -> the reply lines. Lines end at CR or LF; a command sent
        without a line ending is a line too (the simulator sees each command whole)."""
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        return [self.handle(line.decode("utf-8", "replace")) for line in lines if line.strip()]

    def handle(self, line: str) -> str:
        words = line.split()
        cmd = words[0].lower()
        if cmd == "rate" and len(words) == 2:
            try:
                rate = float(words[1])
            except ValueError:
                rate = -1.0
            if not MIN_SIM_RATE <= rate <= MAX_SIM_RATE:
                return f"ERR rate must be {MIN_SIM_RATE:g} to {MAX_SIM_RATE:g} Hz"
            self.pacer.set_rate(rate)
            self.model.set_rate(rate, self.pacer.emitted)
            return f"OK rate {rate:g}"
        if cmd == "spike" and len(words) == 1:
            self.model.spikes_owed += 1
            return "OK spike"
        if cmd in ("help", "?"):
            return "commands: rate <Hz>, spike, help"
        return f"ERR unknown command {words[0][:32]!r} (try help)"


class Pacer:
    """Which samples are due, from the time elapsed since start (never by adding up
    tick lengths, so a late tick catches up and nothing drifts)."""

    def __init__(self, rate_hz: float, tick_s: float):
        self.rate = rate_hz
        self.tick_s = tick_s
        self.start = trio.current_time()
        self.wall0 = time.time()  # the device's clock starts here
        self.emitted = 0
        # Ticks on the window's clock grid (multiples of tick_s), shared by every
        # stream with this window: their batches close together (server/ws/tick.py).
        self._k = math.floor(self.start / tick_s)
        # Sample i happened at wall + (i - base) / rate; base and wall move when the rate changes.
        self._base, self._wall = 0, self.wall0

    def set_rate(self, rate_hz: float) -> None:
        """Samples from the next one on are 1/rate_hz apart, starting now."""
        now = trio.current_time()
        self._base, self._wall = self.emitted, time.time()
        self.start, self.rate = now, rate_hz

    def due(self) -> tuple[int, np.ndarray]:
        """(index of the first due sample, their Unix timestamps); marks them emitted."""
        due = self._base + int((trio.current_time() - self.start) * self.rate) + 1
        first, n = self.emitted, max(0, due - self.emitted)
        self.emitted += n
        return first, self._wall + (first - self._base + np.arange(n)) / self.rate

    async def wait(self) -> None:
        self._k = max(self._k + 1, math.floor(trio.current_time() / self.tick_s))
        await trio.sleep_until(self._k * self.tick_s)


async def run_simulator(
    hub: Hub,
    profile: SimProfile,
    *,
    seed: int = 0,
    window_s: float = 0.05,
    max_samples: int = 4096,
    port: DevicePort | None = None,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    commandable = port is not None and port.accepts_commands
    feed = StreamFeed(hub, profile.id, profile.channels, rate_hz=profile.rate_hz, device=profile.device,
                      window_s=window_s, max_samples=max_samples,
                      commands=commandable, actions=tuple(a.to_json() for a in profile.actions) if commandable else ())
    model = SignalModel(profile, seed)
    pacer = Pacer(profile.rate_hz, window_s)
    task_status.started(feed)
    log.info("simulating %s at %g Hz", profile.id, profile.rate_hz)
    try:
        async with trio.open_nursery() as nursery:
            if port is not None:
                port.key = feed.key
                port.set_connected(True)
                if commandable:
                    nursery.start_soon(_answer_commands, port, SimCommands(model, pacer))
            while True:
                first, ts = pacer.due()
                if len(ts):
                    feed.push(ts, model.generate(first, len(ts)))
                    # A tick's samples are exactly one window: close the batch now
                    # rather than waiting for a flusher to notice.
                    feed.flush()
                await pacer.wait()
    finally:
        if port is not None:
            port.set_connected(False)
        feed.set_status("disconnected")


async def _answer_commands(port: DevicePort, device: SimCommands) -> None:
    """The simulator reads what is written to it at once, like a device that keeps up."""
    while True:
        data = bytes(await port.wait_for_work())
        port.wrote(len(data))
        port.console_lines([r.encode() for r in device.feed(data)], time.time())
