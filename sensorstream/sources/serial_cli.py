"""Command-line wiring for serial sources (issue 3 fills this in).

cli.py calls these three hooks, so everything serial-specific on the command
line lives next to the serial source.
"""

from __future__ import annotations

import argparse


def add_serve_arguments(group: argparse._ArgumentGroup) -> None:
    """Flags of `sensorstream serve` for serial ports and device profiles."""


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """Extra subcommands (`ports`, `simulate --pty`)."""


def apply_args(cfg, args: argparse.Namespace) -> None:
    """Copy parsed serial flags into the ServerConfig."""


def add_sources(server, cfg) -> None:
    """Register one source task per configured serial port / device profile."""


def run_subcommand(args: argparse.Namespace) -> int | None:
    """Run an extra subcommand; None if `args.command` is not one of ours."""
    return None
