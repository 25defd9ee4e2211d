"""Counters for /metrics and /healthz.

The hot path (per frame, per client) only bumps plain integers on plain
objects; prometheus-client turns them into the text exposition when someone
scrapes, through a custom collector. That keeps locks and label lookups off
the fan-out loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields

from prometheus_client import CollectorRegistry, generate_latest

from .. import protocol
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


@dataclass
class ServerStats:
    connections_total: int = 0
    connections_open: int = 0
    http_requests_total: int = 0
    http_rejected_total: int = 0
    frames_sent_total: int = 0  # data frames delivered to clients (per client)
    bytes_sent_total: int = 0
    writes_total: int = 0  # writes (system calls) that carried data frames: one per client per tick when healthy
    dropped_batches_total: int = 0
    ping_timeouts_total: int = 0
    send_timeouts_total: int = 0
    slow_control_closed_total: int = 0
    protocol_errors_total: int = 0
    rate_limited_total: int = 0  # control messages refused by the per-connection rate limit
    tcp_connections_open: int = 0
    source_failures_total: int = 0  # sources that ended with an unexpected error
    # Labelled counters (not in as_dict): refused connections by reason, WebSocket closes by code.
    rejected: dict[str, int] = field(default_factory=dict)
    closed: dict[int | str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.type == "int"}

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def close(self, code: int) -> None:
        key = _close_label(int(code))  # wsproto hands out CloseReason enums
        self.closed[key] = self.closed.get(key, 0) + 1


def _close_label(code: int) -> int | str:
    """The client picks its close code, and 3000-4999 are free for applications:
    kept as is, each would be a metric series for ever. Known codes stay
    themselves; the application ranges share one label each."""
    if 1000 <= code <= 1015:
        return code
    if 3000 <= code <= 4999:
        return f"{code // 1000}xxx"
    return "other"


_HELP = {
    "connections_total": "WebSocket connections accepted",
    "connections_open": "WebSocket connections open now",
    "http_requests_total": "HTTP requests handled (excluding upgrades)",
    "http_rejected_total": "HTTP requests refused (4xx/5xx)",
    "frames_sent_total": "Data frames written to clients",
    "bytes_sent_total": "Data frame bytes written to clients",
    "writes_total": "Writes to clients that carried data frames (one per client per tick: frames_sent / writes = frames per write)",
    "dropped_batches_total": "Batches a client did not get: dropped from its full queue, or history that moved on before it was replayed",
    "ping_timeouts_total": "Clients closed because no Pong arrived in time (dead consumers)",
    "send_timeouts_total": "Clients closed because a write stayed blocked too long (slow consumers)",
    "slow_control_closed_total": "Clients closed because their control queue overflowed",
    "protocol_errors_total": "Bad client requests answered with an error message",
    "source_failures_total": "Sources that ended with an unexpected error (logged with a traceback)",
    "rate_limited_total": "Control messages refused by the per-connection rate limit",
    "tcp_connections_open": "TCP connections open now (HTTP and WebSocket)",
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
        rejected = CounterMetricFamily("sensorstream_rejected_connections", "Connections or upgrades refused, by reason", labels=["reason"])
        for reason, n in sorted(stats.rejected.items()):
            rejected.add_metric([reason], n)
        yield rejected
        closed = CounterMetricFamily("sensorstream_ws_closed", "WebSocket connections ended, by close code", labels=["code"])
        for code, n in sorted(stats.closed.items(), key=lambda kv: str(kv[0])):
            closed.add_metric([str(code)], n)
        yield closed
        hub = self.server.hub
        batches = CounterMetricFamily("sensorstream_stream_batches", "Batches published per stream", labels=["stream"])
        samples = CounterMetricFamily("sensorstream_stream_samples", "Samples published per stream", labels=["stream"])
        live = GaugeMetricFamily("sensorstream_stream_live", "1 if the stream is live", labels=["stream"])
        # A state set: one series per status, 1 for the stream's current one (alert on status="stale" == 1).
        status = GaugeMetricFamily("sensorstream_stream_status", "1 for the stream's current status (live, stale, disconnected, failed)",
                                   labels=["stream", "status"])
        subs = GaugeMetricFamily("sensorstream_stream_subscribers", "Subscribers per stream", labels=["stream"])
        source = CounterMetricFamily("sensorstream_source_events", "Source counters (parse errors, reconnects...)", labels=["stream", "event"])
        frames_out = CounterMetricFamily("sensorstream_stream_frames_out", "Batches queued to subscribers per stream (batch x subscribers)", labels=["stream"])
        samples_out = CounterMetricFamily("sensorstream_stream_samples_out", "Samples queued to subscribers per stream", labels=["stream"])
        bytes_out = CounterMetricFamily("sensorstream_stream_bytes_out", "Payload bytes queued to subscribers per stream", labels=["stream"])
        subs_total = 0
        for info in hub.catalog():
            st = hub.stats(info.key)
            batches.add_metric([info.id], st.batches)
            samples.add_metric([info.id], st.samples)
            frames_out.add_metric([info.id], st.frames_out)
            samples_out.add_metric([info.id], st.samples_out)
            bytes_out.add_metric([info.id], st.bytes_out)
            n_subs = hub.subscriber_count_of(info.key)
            subs_total += n_subs
            live.add_metric([info.id], 1 if info.status == protocol.LIVE else 0)
            for name in protocol.STREAM_STATUSES if info.status in protocol.STREAM_STATUSES else (*protocol.STREAM_STATUSES, info.status):
                status.add_metric([info.id, name], 1 if info.status == name else 0)
            subs.add_metric([info.id], n_subs)
            for event, n in st.source.items():
                source.add_metric([info.id, event], n)
        yield from (batches, samples, live, status, subs, source, frames_out, samples_out, bytes_out)
        bus = hub.bus_status()
        if bus is not None:  # never the URL: it may carry a password
            yield GaugeMetricFamily("sensorstream_bus_up", "1 while the Redis bus is reachable", value=1 if bus["up"] else 0)
            yield CounterMetricFamily("sensorstream_bus_reconnects", "Times the bus connection was set up again", value=bus["reconnects"])
            yield GaugeMetricFamily("sensorstream_bus_outbox_batches", "Batches this publisher holds for Redis now", value=bus["outbox"])
            yield CounterMetricFamily("sensorstream_bus_outbox_dropped_batches",
                                      "Batches this publisher dropped (oldest first) while Redis was unreachable", value=bus["outbox_dropped"])
            yield CounterMetricFamily("sensorstream_bus_lost_batches",
                                      "Seqs this gateway found missing from history (announced to clients as dropped)", value=bus["lost"])
        rec = getattr(self.server, "recorder", None)
        if rec is not None:  # serve --record (docs/recording.md)
            st = rec.stats
            yield CounterMetricFamily("sensorstream_recording_batches", "Batches written to the recording", value=st.batches)
            dropped = CounterMetricFamily("sensorstream_recording_dropped_batches",
                                          "Batches not recorded (disk too slow, full or failing), per stream", labels=["stream"])
            for sid, n in rec.drops.items():
                dropped.add_metric([sid], n)
            yield dropped
            yield CounterMetricFamily("sensorstream_recording_errors", "Failures to open or write a recording file", value=st.errors)
            yield CounterMetricFamily("sensorstream_recording_syncs", "fdatasync/fsync calls that put the recording on the disk", value=st.syncs)
            yield GaugeMetricFamily("sensorstream_recording_failing", "1 while the recording cannot be written", value=1 if st.failing else 0)
        yield GaugeMetricFamily("sensorstream_subscriptions", "Stream subscriptions held by all clients (client x stream)", value=subs_total)
        # Read at scrape time (the hot path keeps no count): a healthy client is
        # written to directly and never has a backlog.
        behind = queued = 0
        for s in self.server.sessions:
            if s.behind:
                behind += 1
                queued += s.n_data
        yield GaugeMetricFamily("sensorstream_connections_behind", "WebSocket clients with a backlog (queued or half-written frames) now", value=behind)
        yield GaugeMetricFamily("sensorstream_queued_frames", "Data frames queued for clients that are behind, now", value=queued)


def make_registry(server) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Collector(server))
    return reg


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
