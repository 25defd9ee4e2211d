"""Every source the server runs, set up in one place from its settings.

``from_config(hub, cfg, commands)`` returns one task per source: the built-in
simulators (``--simulate``, ``--simulate-wide``, ``--simulate-late``) and the serial
devices (``--serial``, ``--device``), each with its DevicePort in the command
registry (its write side and console). The server runs each in its own nursery
slot (``Server.run``), so a source that fails ends alone.
"""

from __future__ import annotations

import functools
from typing import Awaitable, Callable

import trio

from ..commands.profile import parse_actions, parse_polls
from ..commands.registry import CommandRegistry
from ..config import ServerConfig
from ..hub import Hub
from ..server.security import ConfigError
from .simulator import SimProfile, default_profiles, run_simulator, wide_profile

Source = Callable[[], Awaitable[None]]


def from_config(hub: Hub, cfg: ServerConfig, commands: CommandRegistry) -> list[Source]:
    return simulators(hub, cfg, commands) + serial_ports(hub, cfg, commands)


def _sim_profiles(cfg: ServerConfig) -> list[tuple[SimProfile, float]]:
    """The simulator profiles to run, each with its start delay."""
    profiles = default_profiles()
    out = []
    for p in profiles if cfg.simulate else ():
        if cfg.imu_rate and p.id == "sim/imu":
            p = p.with_rate(cfg.imu_rate)
        out.append((p, 0.0))
    if cfg.simulate_wide:
        channels, rate = cfg.simulate_wide
        out.append((wide_profile(channels, rate), 0.0))
    # A stream that appears while clients are connected (demos, dashboard tests).
    out += [(profiles[0].with_id(stream_id), delay) for stream_id, delay in cfg.simulate_late]
    return out


def simulators(hub: Hub, cfg: ServerConfig, commands: CommandRegistry) -> list[Source]:
    out: list[Source] = []

    def sim(p):
        return functools.partial(run_simulator, hub, p, seed=cfg.seed, window_s=cfg.window_s,
                                 max_samples=cfg.max_batch_samples, port=commands.port_for(p.id))

    for p, delay in _sim_profiles(cfg):
        late = sim(p)
        if not delay:
            out.append(late)
            continue

        async def later(late=late, delay=delay):
            await trio.sleep(delay)
            await late()

        out.append(later)
    return out


def serial_specs(cfg: ServerConfig) -> list:
    """The SerialSpec of every ``--serial`` port and ``--device`` profile; ids must differ."""
    from .serial import load_device_profile, spec_from_arg

    specs = [spec_from_arg(a, cfg.baud) for a in cfg.serial]
    specs += [load_device_profile(p) for p in cfg.devices]
    seen = set()
    for s in specs:
        if s.stream_id in seen:
            raise ConfigError(f"two serial sources would both be stream {s.stream_id!r}: give one of them another [stream] id")
        seen.add(s.stream_id)
    return specs


def serial_ports(hub: Hub, cfg: ServerConfig, commands: CommandRegistry) -> list[Source]:
    if not (cfg.serial or cfg.devices):
        return []
    from .serial import run_serial

    return [functools.partial(run_serial, hub, spec, window_s=cfg.window_s, max_samples=cfg.max_batch_samples,
                              port=commands.port_for(spec.stream_id, actions=parse_actions(spec.profile),
                                                     polls=parse_polls(spec.profile)))
            for spec in serial_specs(cfg)]


def alert_rules(cfg: ServerConfig) -> list:
    """Every alert rule the server evaluates (docs/alerts.md): the config file's
    `[[alerts]]`, and those of the profiles of the sources it runs."""
    rules = list(cfg.alerts)
    for p, _ in _sim_profiles(cfg):
        rules += p.alerts
    if cfg.serial or cfg.devices:
        for spec in serial_specs(cfg):
            rules += spec.alerts
    return rules
