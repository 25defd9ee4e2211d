"""Counters for /metrics and /healthz.

The hot path (per frame, per client) only bumps plain integers on plain
objects; prometheus-client turns them into the text exposition when someone
scrapes, through a custom collector. That keeps locks and label lookups off
the fan-out loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


@dataclass
class ServerStats:
    connections_total: int = 0
    connections_open: int = 0
    http_requests_total: int = 0
    http_rejected_total: int = 0
    frames_sent_total: int = 0  # data frames delivered to clients (per client)
    bytes_sent_total: int = 0
    dropped_batches_total: int = 0
    ping_timeouts_total: int = 0
    send_timeouts_total: int = 0
    slow_control_closed_total: int = 0
    protocol_errors_total: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_HELP = {
    "connections_total": "WebSocket connections accepted",
    "connections_open": "WebSocket connections open now",
    "http_requests_total": "HTTP requests handled (excluding upgrades)",
    "http_rejected_total": "HTTP requests refused (4xx/5xx)",
    "frames_sent_total": "Data frames written to clients",
    "bytes_sent_total": "Data frame bytes written to clients",
    "dropped_batches_total": "Batches dropped from full per-client queues",
    "ping_timeouts_total": "Clients closed because no Pong arrived in time (dead consumers)",
    "send_timeouts_total": "Clients closed because a write stayed blocked too long (slow consumers)",
    "slow_control_closed_total": "Clients closed because their control queue overflowed",
    "protocol_errors_total": "Bad client requests answered with an error message",
}


class _Collector:
    def __init__(self, server):
        self.server = server

    def describe(self):
        return []

    def collect(self):
        stats = self.server.stats
        for name, value in stats.as_dict().items():
            metric = "sensorstream_" + name
            if name.endswith("_total"):
                fam = CounterMetricFamily(metric.removesuffix("_total"), _HELP[name])
            else:
                fam = GaugeMetricFamily(metric, _HELP[name])
            fam.add_metric([], value)
            yield fam
        yield GaugeMetricFamily("sensorstream_uptime_seconds", "Seconds since start", value=time.time() - self.server.started_wall)
        hub = self.server.hub
        batches = CounterMetricFamily("sensorstream_stream_batches", "Batches published per stream", labels=["stream"])
        samples = CounterMetricFamily("sensorstream_stream_samples", "Samples published per stream", labels=["stream"])
        live = GaugeMetricFamily("sensorstream_stream_live", "1 if the stream is live", labels=["stream"])
        subs = GaugeMetricFamily("sensorstream_stream_subscribers", "Subscribers per stream", labels=["stream"])
        source = CounterMetricFamily("sensorstream_source_events", "Source counters (parse errors, reconnects...)", labels=["stream", "event"])
        for info in hub.catalog():
            st = hub.stats(info.key)
            batches.add_metric([info.id], st.batches)
            samples.add_metric([info.id], st.samples)
            live.add_metric([info.id], 1 if info.status == "live" else 0)
            subs.add_metric([info.id], hub.subscriber_count_of(info.key))
            for event, n in st.source.items():
                source.add_metric([info.id, event], n)
        yield from (batches, samples, live, subs, source)


def make_registry(server) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Collector(server))
    return reg


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
