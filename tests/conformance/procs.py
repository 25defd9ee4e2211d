"""Servers under test as child processes, each announcing its address on one line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(rb"listening on (?:ws|http)s?://[^\s:]+:(\d+)/")


class Child:
    """A child process whose output is copied to `log`; `port` is what it said it listens on.

    A thread copies the output (the child never blocks on a full pipe) and
    signals the first `listening on ...:PORT/` line: waiting for it is waiting
    for an event, with a deadline, not a sleep."""

    def __init__(self, name: str, argv: list[str], log: Path, *, ready_timeout: float = 30.0):
        self.name = name
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        env.setdefault("PYTHONUNBUFFERED", "1")
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.port: int | None = None
        self._ready = threading.Event()
        self._copier = threading.Thread(target=self._copy, name=f"{name}-output", daemon=True)
        self._copier.start()
        if not self._ready.wait(ready_timeout) or self.port is None:
            self.stop()
            raise RuntimeError(f"{name} did not start (see {log})")

    def _copy(self) -> None:
        with open(self.log, "wb") as out:
            for line in self.proc.stdout:
                out.write(line)
                out.flush()
                if self.port is None and (m := _LISTENING.search(line)):
                    self.port = int(m.group(1))
                    self._ready.set()
        self._ready.set()  # it ended: whoever waits stops waiting

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL if it does not go within `timeout`. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._copier.join(timeout)
        return self.proc.returncode

    def __enter__(self) -> "Child":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
