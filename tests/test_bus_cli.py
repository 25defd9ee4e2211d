"""`serve --bus` on the command line: bad URLs are one clear line and exit 2; the URL
also comes from --config and $SENSORSTREAM_BUS (no Redis needed here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sensorstream import cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("url, says", [
    ("http://127.0.0.1:6379", "must start with redis://"),
    ("redis://h:port", "port in the bus URL must be a number"),
    ("redis://h1:1,h2:2", "need redis+cluster://"),
    ("redis+cluster://h:1/2", "no database number"),
])
def test_a_bad_bus_url_is_one_line_and_exit_code_2(url, says):
    out = subprocess.run([sys.executable, "-m", "sensorstream", "serve", "--bus", url], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 2
    assert says in out.stderr and "Traceback" not in out.stderr
    assert len([line for line in out.stderr.splitlines() if "error" in line]) == 1


def test_the_bus_url_comes_from_config_env_or_flag_in_that_order(tmp_path, monkeypatch):
    conf = tmp_path / "s.toml"
    conf.write_text('bus = "redis://from-config:6379/0"\nbus_ttl = 2.5\n')
    p = cli.build_parser()
    monkeypatch.delenv(cli.BUS_ENV, raising=False)
    a = cli.parse_serve_args(p, ["serve", "--config", str(conf)])
    assert (a.bus, a.bus_ttl) == ("redis://from-config:6379/0", 2.5)
    monkeypatch.setenv(cli.BUS_ENV, "redis://from-env:6379/0")
    assert cli.parse_serve_args(cli.build_parser(), ["serve", "--config", str(conf)]).bus == "redis://from-env:6379/0"
    a = cli.parse_serve_args(cli.build_parser(), ["serve", "--config", str(conf), "--bus", "redis://flag:1/0"])
    assert cli.config_from_args(a).bus == "redis://flag:1/0"
