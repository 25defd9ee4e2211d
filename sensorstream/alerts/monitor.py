"""The glue between the alert engine and the running server.

`AlertMonitor` is a hub observer: the hub hands it each stream change and each
batch synchronously (after the batch's fan-out), it runs the engine, and every
transition goes out three ways at once: an `alert` message to the stream's
subscribers, the webhook's queue, and a log line. /metrics reads its state at
scrape time (`AlertCollector`). Its one task (`run`) fires status alerts whose
hold runs out while nothing else happens, and owns the webhook's task.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable, Iterable

import numpy as np
import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .. import protocol
from ..hub import Hub
from ..protocol import StreamInfo
from .engine import MAX_INSTANCES, AlertEngine, Transition
from .rules import AlertRule
from .webhook import Webhook

log = logging.getLogger(__name__)


class AlertMonitor:
    def __init__(self, hub: Hub, rules: Iterable[AlertRule] = (), *, webhook: Webhook | None = None,
                 clock: Callable[[], float] = trio.current_time, wall: Callable[[], float] = time.time):
        self.hub = hub
        self.engine = AlertEngine(rules)
        self.webhook = webhook
        self.clock = clock
        self.wall = wall
        self.transitions_total = 0
        self._wake = trio.Event()
        hub.add_observer(self)

    def add_rules(self, rules: Iterable[AlertRule]) -> None:
        self.engine.add_rules(rules)

    # ---- hub observer: synchronous, never blocks

    def on_stream(self, info: StreamInfo) -> None:
        unbound = self.engine.unbound
        self._emit(self.engine.on_stream(info, self.clock(), self.wall()))
        if self.engine.unbound != unbound:
            log.warning("alerts: %d rule bindings skipped in all: more than %d rules x streams", self.engine.unbound,
                        MAX_INSTANCES, extra={"event": "alerts_unbound", "unbound": self.engine.unbound})
        self._wake.set()  # a status hold may have started: the task re-reads the deadline

    def on_removed(self, key: int) -> None:
        self._emit(self.engine.on_removed(key, self.wall()))

    def on_batch(self, info: StreamInfo, timestamps: np.ndarray, values: np.ndarray) -> None:
        trs = self.engine.on_batch(info.key, timestamps, values)
        if trs:
            self._emit(trs)

    # ---- out

    def _emit(self, transitions: list[Transition]) -> None:
        for tr in transitions:
            self.transitions_total += 1
            msg = tr.to_json()
            self.hub.notify_subscribers(tr.key, protocol.alert(msg))
            if self.webhook is not None:
                self.webhook.offer(msg)
            level = logging.WARNING if tr.firing else logging.INFO
            value = "" if tr.value is None else f" (value {tr.value:g})"
            log.log(level, "alert %s %s: %s%s", tr.id, tr.state, tr.rule.message, value,
                    extra={"event": "alert", "alert": tr.id, "state": tr.state, "severity": tr.rule.severity})

    def firing_messages(self, keys: Iterable[int]) -> list[str]:
        """`alert` messages of the alerts firing now on these streams: a client that
        subscribes gets them right after `subscribed`."""
        return [protocol.alert(tr.to_json()) for tr in self.engine.firing(keys)]

    # ---- task

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            if self.webhook is not None:
                nursery.start_soon(self.webhook.run)
            while True:
                deadline = self.engine.next_deadline()
                with trio.move_on_at(math.inf if deadline is None else deadline):
                    await self._wake.wait()
                self._wake = trio.Event()
                self._emit(self.engine.tick(self.clock(), self.wall()))


class AlertCollector:
    """/metrics: one state gauge and one firing counter per alert (stream x rule),
    and the webhook's counters. Read at scrape time; the data path keeps no labels."""

    def __init__(self, monitor: AlertMonitor):
        self.monitor = monitor

    def describe(self):
        return []

    def collect(self):
        labels = ["stream", "alert", "channel", "severity"]
        state = GaugeMetricFamily("sensorstream_alert_firing", "1 while the alert fires, else 0", labels=labels)
        fired = CounterMetricFamily("sensorstream_alert_fired", "Times the alert started firing", labels=labels)
        for inst in self.monitor.engine.instances():
            r = inst.rule
            lv = [inst.stream, r.name, r.channel or "", r.severity]
            state.add_metric(lv, 1 if inst.firing else 0)
            fired.add_metric(lv, inst.fired)
        yield state
        yield fired
        wh = self.monitor.webhook
        if wh is not None:
            s = wh.stats
            for name, value, text in (
                ("sent", s.sent, "Alert transitions the webhook accepted (2xx)"),
                ("failed", s.failed, "Webhook POST attempts that failed (each retry counts)"),
                ("given_up", s.given_up, "Alert transitions given up after every retry failed"),
                ("dropped", s.dropped, "Alert transitions dropped because the webhook queue was full"),
            ):
                yield CounterMetricFamily(f"sensorstream_alert_webhook_{name}", text, value=value)
