"""Server settings: one dataclass, filled from defaults, a TOML file and flags (in that order)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    # Access control (docs/security.md)
    token: str | None = None  # required from WebSocket and /metrics clients when set
    allow_origins: list[str] = field(default_factory=list)  # besides the server's own origin
    insecure: bool = False  # allow a non-loopback bind without a token
    certfile: str | None = None  # TLS: https/wss on the same port
    keyfile: str | None = None
    # Commands to devices (docs/security.md, "Commands"): off unless allowed or a control token is set
    allow_commands: bool = False
    control_token: str | None = None  # only clients presenting it may send commands
    command_rate: float = 10.0  # commands per second per connection
    command_burst: int = 20
    max_command_bytes: int = 1024  # per command
    command_queue_bytes: int = 4096  # per port, not yet written to the device
    # Batching
    window_s: float = 0.05
    max_batch_samples: int = 4096
    # History ring buffer, per stream
    history_s: float = 60.0
    history_mb: float = 32.0
    # Liveness and backpressure
    ping_interval: float = 5.0
    ping_timeout: float = 10.0
    send_timeout: float = 10.0
    heartbeat_s: float = 2.0
    queue_batches: int = 256  # per client; oldest data dropped beyond this
    queue_mb: float = 16.0  # per client, the same in bytes (for streams of big batches)
    queue_control: int = 1024  # per client; a client this far behind on control messages is closed
    close_timeout: float = 1.0  # how long a polite close handshake may take
    # HTTP front door
    handshake_timeout: float = 10.0
    max_head_bytes: int = 16 * 1024
    max_message_bytes: int = 64 * 1024  # from clients
    # Limits (docs/configuration.md)
    max_connections: int = 2048  # TCP connections at once; more get 503
    max_connections_per_client: int = 256  # per client address; more get 429
    control_rate: float = 20.0  # control messages per second per connection (token bucket)
    control_burst: int = 40  # bucket size; this many refused in a row closes with 1008
    max_subscriptions: int = 256  # stream patterns one connection may hold
    # Health and logging
    unhealthy_after_s: float = 30.0
    log_level: str = "info"
    log_format: str = "text"  # or "json"
    # Sources
    simulate: bool = False
    seed: int = 0
    imu_rate: float | None = None
    simulate_late: list[tuple[str, float]] = field(default_factory=list)
    simulate_wide: tuple[int, float] | None = None  # (channels, rate): stream sim/wide
    serial: list[str] = field(default_factory=list)  # PORT or PORT@BAUD, see sources/serial_cli.py
    baud: int = 115200
    devices: list[str] = field(default_factory=list)  # device profile TOML paths
    dashboard_dir: str | None = None
    # Alerts (docs/alerts.md): [[alerts]] of --config (profiles bring their own), and where to POST transitions
    alerts: list = field(default_factory=list)  # AlertRule
    alert_webhook: str | None = None
    # Scale-out (docs/scaling.md): share streams through Redis. None: in-process only.
    bus: str | None = None  # redis://, rediss://, redis+cluster://h1:p1,h2:p2
    bus_ttl_s: float = 5.0  # a publisher's streams are disconnected this long after it stops heartbeating
    bus_outbox_mb: float = 64.0  # what a publisher buffers while Redis is unreachable; oldest dropped beyond
    bus_cafile: str | None = None  # rediss://: trust this CA (PEM) instead of the system store
    # Recording (docs/recording.md): every batch of the matching streams into MCAP files in this directory
    record: str | None = None
    record_streams: list[str] = field(default_factory=lambda: ["*"])
    record_max_mb: float | None = None  # rotate to a new file at this size
    record_max_age_s: float | None = None  # ... or at this age
    record_compression: str = "zstd"  # chunk compression: zstd, lz4 (extra `lz4`) or none
