"""Command line: `sensorstream serve | tail`."""

from __future__ import annotations

import argparse
import datetime as dt
import errno
import logging
import os
import signal
import socket
import sys
import tomllib

import trio

from . import __version__
from . import argtypes, logs
from .config import ServerConfig
from .excgroups import leaves, single
from .server.security import ConfigError
from .recording import cli as recording_cli
from .commands import cli as commands_cli
from .sources import serial_cli


class HelpFormatter(argparse.HelpFormatter):
    """argparse's defaults-in-help, without "(default: None)", "(default: [])",
    "(default: False)" or a second default where the text already gives one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        empty = d is None or d is False or d is argparse.SUPPRESS or (isinstance(d, list) and not d)  # (not `in`: 0 == False)
        if "default" in text or empty or not action.option_strings:
            return text
        return f"{text} (default: {d:g})" if isinstance(d, float) else f"{text} (default: {d})"


TOKEN_ENV = "SENSORSTREAM_TOKEN"
DEFAULT_TAIL_URL = "ws://127.0.0.1:8765/ws"
BUS_ENV = "SENSORSTREAM_BUS"


def _bus_url(text: str) -> str:
    from .hub.busurl import parse_bus_url  # no Redis client: that loads only when serving with a bus

    try:
        u = parse_bus_url(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if u.ca_certs:  # ?ca=PATH: the same check as --bus-cafile, now rather than at every reconnect
        try:
            argtypes.readable_file(u.ca_certs)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"?ca= in the bus URL: {e}") from None
    return text


def _webhook_url(text: str) -> str:
    from .alerts.webhook import WebhookURLError, parse_url

    try:
        parse_url(text)
    except WebhookURLError as e:
        raise argparse.ArgumentTypeError(str(e).split(": ", 1)[1]) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sensorstream", description="Live sensor data from devices to the browser.")
    p.add_argument("--version", action="version", version=f"sensorstream {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = ServerConfig()
    s = sub.add_parser("serve", help="run the server", formatter_class=HelpFormatter,
                       usage="sensorstream serve [--simulate] [--serial PORT] [--device PROFILE.toml] [options]  (see --help)")
    s.add_argument("--config", metavar="PATH.toml", default=None, type=argtypes.readable_file,
                   help="read settings from a TOML file: keys are these flags' names with _ (ping_interval = 5); flags given here override it")
    g = s.add_argument_group("network and access control (docs/security.md)")
    g.add_argument("--host", type=argtypes.host, default=d.host, help="address to bind; anything but loopback needs --token or --insecure")
    g.add_argument("--port", type=argtypes.listen_port, default=d.port, help="TCP port, 1-65535 (0 picks a free one)")
    g.add_argument("--token", default=None,
                   help=f"WebSocket and /metrics clients must present this (?token=... or Authorization: Bearer); also ${TOKEN_ENV}")
    g.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN", type=argtypes.origin,
                   help="also accept WebSocket upgrades from this browser origin, e.g. https://grafana.example.com (repeatable; * allows any)")
    g.add_argument("--insecure", action="store_true", help="allow binding a non-loopback address without a token")
    g.add_argument("--certfile", default=None, type=argtypes.readable_file, help="TLS certificate chain (PEM file): serve https/wss on the same port")
    g.add_argument("--keyfile", default=None, type=argtypes.readable_file, help="TLS private key (PEM file), if not in --certfile")
    g.add_argument("--dashboard-dir", default=None, type=argtypes.dashboard_dir, metavar="DIR",
                   help="serve the dashboard from this directory (with an index.html) instead of the bundled one")
    g = s.add_argument_group("sources")
    g.add_argument("--simulate", action="store_true", help="stream the built-in simulators (devices/sim-*.toml)")
    g.add_argument("--seed", type=argtypes.seed, default=d.seed, help="simulator random seed, 0-4294967295 (same seed, same data)")
    g.add_argument("--imu-rate", type=argtypes.number(0, 1e6, min_open=True), default=None, metavar="HZ",
                   help="simulated IMU sample rate in Hz (default: its profile's, 200)")
    g.add_argument("--simulate-late", type=argtypes.late, action="append", default=[], metavar="ID:SECONDS",
                   help="add a simulated stream ID after SECONDS (shows streams appearing live)")
    g.add_argument("--simulate-wide", type=argtypes.wide, default=None, metavar="CHANNELS:RATE",
                   help="add stream sim/wide with CHANNELS channels at RATE Hz (load tests, e.g. 16:1000)")
    serial_cli.add_serve_arguments(s.add_argument_group("serial devices"))
    commands_cli.add_serve_arguments(s.add_argument_group("commands to devices (docs/security.md)"))
    g = s.add_argument_group("batching and history")
    g.add_argument("--window-ms", type=argtypes.number(0, 60_000, min_open=True), default=d.window_s * 1000, metavar="MS",
                   help="batch window in milliseconds: a batch closes this long after its first sample")
    g.add_argument("--max-batch", type=argtypes.integer(1, 1_000_000), default=d.max_batch_samples, metavar="SAMPLES",
                   help="most samples in one batch")
    g.add_argument("--history-s", type=argtypes.number(0, 86_400), default=d.history_s, metavar="SECONDS",
                   help="seconds of history kept per stream (0: none)")
    g.add_argument("--history-mb", type=argtypes.number(0, 1_000_000), default=d.history_mb, metavar="MIB", help="history cap per stream in MiB")
    g = s.add_argument_group("liveness and backpressure")
    g.add_argument("--ping-interval", type=argtypes.positive_float, default=d.ping_interval, metavar="SECONDS", help="seconds between WebSocket pings")
    g.add_argument("--ping-timeout", type=argtypes.positive_float, default=d.ping_timeout, metavar="SECONDS",
                   help="close a client whose pong is this many seconds late")
    g.add_argument("--send-timeout", type=argtypes.positive_float, default=d.send_timeout, metavar="SECONDS",
                   help="close a client whose write blocks this many seconds")
    g.add_argument("--heartbeat", type=argtypes.positive_float, default=d.heartbeat_s, metavar="SECONDS",
                   help="seconds between heartbeat messages on idle connections")
    g.add_argument("--queue-batches", type=argtypes.positive_int, default=d.queue_batches, metavar="BATCHES",
                   help="per-client queue in batches; oldest batches dropped beyond it")
    g.add_argument("--queue-mb", type=argtypes.positive_float, default=d.queue_mb, metavar="MIB",
                   help="per-client queue in MiB; oldest batches dropped beyond it")
    g.add_argument("--queue-control", type=argtypes.positive_int, default=d.queue_control, metavar="MESSAGES",
                   help="close a client with this many unsent control messages")
    g.add_argument("--close-timeout", type=argtypes.positive_float, default=d.close_timeout, metavar="SECONDS",
                   help="seconds a polite close handshake may take")
    g = s.add_argument_group("limits (docs/configuration.md)")
    g.add_argument("--max-connections", type=argtypes.positive_int, default=d.max_connections, metavar="N",
                   help="TCP connections at once; more are answered 503")
    g.add_argument("--max-connections-per-client", type=argtypes.positive_int, default=d.max_connections_per_client, metavar="N",
                   help="TCP connections at once from one client address; more are answered 429")
    g.add_argument("--handshake-timeout", type=argtypes.positive_float, default=d.handshake_timeout, metavar="SECONDS",
                   help="seconds for the TLS handshake, each request head and the WebSocket handshake")
    g.add_argument("--max-head-bytes", type=argtypes.positive_int, default=d.max_head_bytes, metavar="BYTES",
                   help="largest HTTP request head in bytes; larger is answered 431")
    g.add_argument("--max-message-bytes", type=argtypes.positive_int, default=d.max_message_bytes, metavar="BYTES",
                   help="largest WebSocket message from a client in bytes; larger closes it with 1009")
    g.add_argument("--control-rate", type=argtypes.positive_float, default=d.control_rate, metavar="PER_S",
                   help="control messages a second per connection")
    g.add_argument("--control-burst", type=argtypes.positive_int, default=d.control_burst, metavar="N",
                   help="control messages at once per connection; this many refused in a row closes it with 1008")
    g.add_argument("--max-subscriptions", type=argtypes.positive_int, default=d.max_subscriptions, metavar="N",
                   help="stream patterns one connection may hold")
    g = s.add_argument_group("alerts (docs/alerts.md)")
    g.add_argument("--alert-webhook", type=_webhook_url, default=None, metavar="URL",
                   help="POST every alert transition (firing/resolved) as JSON to this http(s) URL; limits come from "
                        "[[alerts]] in device profiles and in --config")
    g = s.add_argument_group("scale-out over Redis (docs/scaling.md)")
    g.add_argument("--bus", default=None, metavar="URL", type=_bus_url,
                   help=f"share streams with other sensorstream processes through Redis: redis://HOST:6379/0, rediss://..., "
                        f"redis+cluster://H1:P1,H2:P2; also ${BUS_ENV}")
    g.add_argument("--bus-ttl", type=argtypes.number(0.1, 3600), default=d.bus_ttl_s, metavar="SECONDS",
                   help="seconds after a publisher stops heartbeating that its streams show as disconnected")
    g.add_argument("--bus-outbox-mb", type=argtypes.number(0, 1_000_000, min_open=True), default=d.bus_outbox_mb, metavar="MIB",
                   help="MiB a publisher buffers while Redis is unreachable; the oldest batches are dropped beyond it")
    g.add_argument("--bus-cafile", default=None, type=argtypes.readable_file, metavar="PATH",
                   help="rediss:// only: trust this CA (or self-signed) certificate (PEM file) instead of the system's "
                        "trust store; the same as ?ca=PATH in the URL")
    g = s.add_argument_group("health and logging")
    g.add_argument("--unhealthy-after", type=argtypes.positive_float, default=d.unhealthy_after_s, metavar="SECONDS",
                   help="/healthz answers 503 once a stream has been disconnected this many seconds (stale or failed: at once)")
    g.add_argument("--log-level", default=d.log_level, choices=["debug", "info", "warning", "error"], help="least severe level logged")
    g.add_argument("--log-format", default=d.log_format, choices=["text", "json"],
                   help="json: one object per line; either way repeated messages are rate-limited")
    recording_cli.add_serve_arguments(s.add_argument_group("recording (docs/recording.md)"), d)

    t = sub.add_parser("tail", help="print live samples from a running server", formatter_class=HelpFormatter,
                       usage="sensorstream tail [URL] [--stream ID_OR_GLOB] [options]  (see --help)")
    t.add_argument("url", nargs="?", default=DEFAULT_TAIL_URL,
                   help=f"the server: ws://HOST:PORT/ws, wss://..., http(s)://HOST:PORT or HOST:PORT (default: {DEFAULT_TAIL_URL})")
    t.add_argument("--stream", action="append", default=None, help="stream id or glob (repeatable; default: all)")
    t.add_argument("--history", type=argtypes.number(0, 86_400), default=0.0, metavar="SECONDS", help="start with this many seconds of history")
    t.add_argument("--count", type=argtypes.nonnegative_int, default=0, metavar="N",
                   help="stop after printing N lines: samples, or batches with --batches (0: run until Ctrl-C)")
    t.add_argument("--batches", action="store_true", help="one line per batch instead of per sample")
    t.add_argument("--cafile", default=None, type=argtypes.readable_file, help="trust this CA (or self-signed) certificate (PEM file) for wss:// URLs")
    serial_cli.add_subcommands(sub)
    recording_cli.add_subcommands(sub)
    commands_cli.add_subcommands(sub)
    return p


def config_from_args(a: argparse.Namespace) -> ServerConfig:
    cfg = ServerConfig(
        host=a.host, port=a.port, simulate=a.simulate, seed=a.seed, imu_rate=a.imu_rate, simulate_late=a.simulate_late,
        simulate_wide=a.simulate_wide,
        window_s=a.window_ms / 1000, max_batch_samples=a.max_batch, history_s=a.history_s, history_mb=a.history_mb,
        ping_interval=a.ping_interval, ping_timeout=a.ping_timeout, send_timeout=a.send_timeout,
        heartbeat_s=a.heartbeat, queue_batches=a.queue_batches, queue_mb=a.queue_mb, queue_control=a.queue_control, close_timeout=a.close_timeout,
        token=a.token or None, allow_origins=list(a.allow_origin), insecure=a.insecure, certfile=a.certfile, keyfile=a.keyfile,
        dashboard_dir=a.dashboard_dir, max_connections=a.max_connections, max_connections_per_client=a.max_connections_per_client,
        handshake_timeout=a.handshake_timeout, max_head_bytes=a.max_head_bytes, max_message_bytes=a.max_message_bytes,
        control_rate=a.control_rate, control_burst=a.control_burst, max_subscriptions=a.max_subscriptions,
        unhealthy_after_s=a.unhealthy_after, log_level=a.log_level, log_format=a.log_format,
        alerts=list(getattr(a, "alerts", [])), alert_webhook=a.alert_webhook,
        bus=a.bus or None, bus_ttl_s=a.bus_ttl, bus_outbox_mb=a.bus_outbox_mb, bus_cafile=a.bus_cafile,
    )
    serial_cli.apply_args(cfg, a)
    recording_cli.apply_serve_args(cfg, a)
    commands_cli.apply_args(cfg, a)
    return cfg


class ListenError(Exception):
    """The server could not open its port (exit code 1, one line)."""


def _listen_error(exc: BaseException, cfg: ServerConfig) -> ListenError | None:
    """The one-line reason a bind failed, if that is what `exc` (maybe a group) is."""
    for e in leaves(exc):
        if isinstance(e, socket.gaierror):
            return ListenError(f"cannot listen on {cfg.host}:{cfg.port}: unknown host {cfg.host!r} ({e.strerror}); use an address of this machine, e.g. 127.0.0.1")
        if isinstance(e, OSError) and e.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            hint = {
                errno.EADDRINUSE: "address already in use (another sensorstream?); choose another with --port",
                errno.EADDRNOTAVAIL: "this machine has no such address; use one of its own, e.g. 127.0.0.1 or 0.0.0.0",
                errno.EACCES: "permission denied (ports below 1024 need privileges); choose another with --port",
            }[e.errno]
            return ListenError(f"cannot listen on {cfg.host}:{cfg.port}: {hint}")
    return None


def run_server(command: str, fn, *args) -> int:
    """trio.run(fn, *args) for a command that serves: exit code 0, or 1 with one
    line when the port cannot be opened."""
    try:
        trio.run(fn, *args)
    except BaseExceptionGroup as eg:
        if not isinstance(single(eg), ListenError):
            raise
        print(f"sensorstream {command}: error: {single(eg)}", file=sys.stderr)
        return 1
    return 0


async def serve(cfg: ServerConfig, server=None, what: str = "") -> None:
    """Run `server` (by default one set up from `cfg`) until SIGINT/SIGTERM."""
    from .server import gctune
    from .server.app import Server

    if server is None:
        server = Server(cfg)  # sets up every source (sources/setup.py)
    # Signals are handled as events, not KeyboardInterrupt, so shutdown is an
    # ordinary code path: close clients with 1001, stop sources, exit 0.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            try:
                port = await nursery.start(server.run)
            except BaseException as e:
                err = _listen_error(e, cfg)
                if err is None:
                    raise
                raise err from None
            gctune.tune()  # start-up is over (server/gctune.py)
            host = cfg.host if ":" not in cfg.host else f"[{cfg.host}]"
            http, ws = ("https", "wss") if cfg.certfile else ("http", "ws")
            print(f"sensorstream {__version__}: {what}dashboard at {http}://{host}:{port}/  (WebSocket {ws}://{host}:{port}/ws)", flush=True)
            async for sig in signals:
                logging.getLogger("sensorstream").info("signal %s: shutting down", signal.Signals(sig).name)
                break
            await server.shutdown()
            nursery.cancel_scope.cancel()


def _emit(text: str) -> bool:
    """Print a line of `tail`'s output. False once the reader of stdout has gone
    (`sensorstream tail ... | head`): tail then stops quietly, as Unix tools do.
    stdout is pointed at /dev/null first, or Python's flush at exit would raise
    the same BrokenPipeError again."""
    try:
        print(text, flush=True)
        return True
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return False


async def tail(a: argparse.Namespace) -> None:
    from .client import Gap, open_client

    printed = 0
    ctx = None
    if a.cafile:
        import ssl

        ctx = ssl.create_default_context(cafile=a.cafile)
    async with open_client(a.url, a.stream or ["*"], history_s=a.history, ssl_context=ctx) as client:
        async for batch in client.events():
            if isinstance(batch, Gap):
                # On stderr: stdout stays samples only, for whatever reads it.
                lost = "an unknown number of" if batch.batches is None else str(batch.batches)
                print(f"sensorstream tail: {batch.stream}: {lost} batches lost ({batch.reason})", file=sys.stderr, flush=True)
                continue
            if isinstance(batch, dict):
                continue
            info = client.streams.get(batch.key)
            sid = info.id if info else f"key{batch.key}"
            names = [c.name for c in info.channels] if info else []
            if a.batches:
                if not _emit(f"{sid} seq={batch.seq} n={len(batch.timestamps)}"):
                    return
                printed += 1
            else:
                lines = []
                for i, t in enumerate(batch.timestamps):
                    when = dt.datetime.fromtimestamp(float(t), dt.timezone.utc).isoformat(timespec="milliseconds")
                    vals = " ".join(f"{names[c] if c < len(names) else f'ch{c}'}={batch.values[c, i]:.6g}" for c in range(batch.values.shape[0]))
                    lines.append(f"{when} {sid} {vals}")
                    printed += 1
                    if a.count and printed >= a.count:
                        break
                if not _emit("\n".join(lines)):
                    return
            if a.count and printed >= a.count:
                return


def _run_tail(a: argparse.Namespace) -> int:
    """`tail`: 0 when done (--count, or its reader left), 1 on a failure retrying
    cannot fix (one line), 2 for a bad URL, 130 on Ctrl-C; never a traceback for those."""
    from .client import BadURL, PermanentError, normalize_url

    try:
        a.url = normalize_url(a.url)
    except BadURL as e:
        print(f"sensorstream tail: error: {e}", file=sys.stderr)
        return 2
    # The client's connection reports (first failure, rate-limited retries) go to stderr as plain lines.
    logging.basicConfig(level="WARNING", format="sensorstream tail: %(message)s")
    try:
        trio.run(tail, a)
    except KeyboardInterrupt:
        return 130
    except PermanentError as e:
        print(f"sensorstream tail: error: {e}", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------- config file


def _serve_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["serve"]


def _convert(action: argparse.Action, value, where: str):
    """A TOML value for `action`, checked and converted as argparse would a flag."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, not {value!r}")
        return value
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        return [_convert_one(action, v, where) for v in items]
    return _convert_one(action, value, where)


def _convert_one(action: argparse.Action, value, where: str):
    kind = action.type
    if isinstance(value, (dict, list)) or isinstance(value, bool):
        raise ConfigError(f"{where}: unexpected value {value!r}")
    try:
        if kind is None:
            if not isinstance(value, str):
                raise ConfigError(f"{where}: expected a string, not {value!r}")
            v = value
        elif kind is int or getattr(kind, "integer", False):
            if isinstance(value, float) and not value.is_integer():
                raise ConfigError(f"{where}: expected an integer, not {value!r}")
            v = kind(str(int(value)) if isinstance(value, float) else str(value))
        else:
            # float, and the project's own types (ID:SECONDS...), take the flag's text form.
            v = kind(str(value))
    except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{where}: {e or f'invalid value {value!r}'}") from None
    if action.choices is not None and v not in action.choices:
        raise ConfigError(f"{where}: {v!r} is not one of {', '.join(map(str, action.choices))}")
    return v


def config_file_defaults(serve_parser: argparse.ArgumentParser, path: str) -> dict:
    """Read a TOML config file into argparse defaults for `serve`."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: {e}") from None
    actions = {a.dest: a for a in serve_parser._actions if a.dest not in ("help", "config") and a.option_strings}
    out = {}
    if "alerts" in data:
        # [[alerts]] tables: limits (docs/alerts.md), not a flag.
        from .alerts.rules import RuleError, parse_rules

        try:
            out["alerts"] = parse_rules(data.pop("alerts"), f"config file {path}")
        except RuleError as e:
            raise ConfigError(str(e)) from None
    for key, value in data.items():
        dest = key.lstrip("-").replace("-", "_")  # `--window-ms`, `window-ms` and `window_ms` all name the flag
        action = actions.get(dest)
        if action is None:
            hint = argtypes.suggest(dest, actions) or " (settings are the flags of `serve` with _ for -, e.g. ping_interval)"
            raise ConfigError(f"config file {path}: unknown setting {key!r}{hint}")
        out[dest] = _convert(action, value, f"config file {path}: {key}")
    return out


def parse_serve_args(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, then layer: defaults < config file < $SENSORSTREAM_TOKEN, $SENSORSTREAM_BUS,
    $SENSORSTREAM_CONTROL_TOKEN < flags."""
    a = p.parse_args(argv)
    if a.command != "serve":
        return a
    sp = _serve_parser(p)
    defaults = config_file_defaults(sp, a.config) if a.config else {}
    if os.environ.get(TOKEN_ENV):
        defaults["token"] = os.environ[TOKEN_ENV]
    if os.environ.get(BUS_ENV):
        defaults["bus"] = os.environ[BUS_ENV]
    if os.environ.get(commands_cli.CONTROL_TOKEN_ENV):
        defaults["control_token"] = os.environ[commands_cli.CONTROL_TOKEN_ENV]
    if defaults:
        sp.set_defaults(**defaults)
        a = p.parse_args(argv)
        # argparse appends repeated flags to a list default; a flag given on the
        # command line replaces the file's list instead.
        for dest, value in defaults.items():
            got = getattr(a, dest, None)
            if isinstance(value, list) and isinstance(got, list) and len(got) > len(value) and got[: len(value)] == value:
                setattr(a, dest, got[len(value):])
    _check_together(sp, a)
    return a


def _check_together(sp: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """Flags that mean nothing without another one: said, not silently ignored (exit 2)."""
    if a.keyfile and not a.certfile:
        sp.error("--keyfile needs --certfile (the certificate to serve with that key)")
    if a.imu_rate is not None and not a.simulate:
        sp.error("--imu-rate sets the rate of --simulate's IMU: add --simulate")
    if a.bus_cafile and not (a.bus or "").startswith("rediss"):
        sp.error("--bus-cafile is the CA for a TLS bus: it needs --bus rediss://... (or rediss+cluster://...)")


def main(argv: list[str] | None = None) -> int:
    a = None
    try:
        try:
            a = parse_serve_args(build_parser(), argv)
        except SystemExit as e:  # argparse's own one-line error (2), or --help/--version (0)
            return e.code if isinstance(e.code, int) else 2
        if a.command == "serve":
            cfg = config_from_args(a)
            logs.setup(cfg.log_level, cfg.log_format)
            return run_server("serve", serve, cfg)  # Server() checks settings and profiles before anything starts
        if a.command == "tail":
            return _run_tail(a)
        rc = recording_cli.run_subcommand(a)
        if rc is not None:
            return rc
        rc = serial_cli.run_subcommand(a)
        if rc is None:
            rc = commands_cli.run_subcommand(a)
        return 2 if rc is None else rc
    except ConfigError as e:
        print(f"sensorstream {a.command if a else 'serve'}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
