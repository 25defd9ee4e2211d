"""The alert evaluator, sans-I/O: batches and statuses in, transitions out.

Limit rules are evaluated on the batch's own timestamps (device time when the
device stamps its samples), so `for_ms` and `clear_ms` mean time *in the data*,
whatever the batching and however late the batch is. Status rules have no
samples to go by: they use the `now` the caller passes (the monitor passes
trio's clock), and `tick(now)` fires what came due in between.

Per batch and rule the work is a handful of numpy passes over the channel's
values, never a Python loop over samples: a loop turn costs one *transition*,
and a rule with a hold cannot change state more often than its hold allows
(a rule with no hold at all is computed in one pass, see `_scan`).

Semantics (docs/alerts.md):
- a limit is breached while value > above or value < below;
- NaN (a sample the channel did not report) is no evidence either way: it
  neither starts, extends nor breaks a breach;
- a channel the stream does not have (yet) is not evaluated; it is picked up
  when a `stream` update adds it;
- flapping within one batch is summarised: at most two transitions per rule and
  batch reach the outside (the first one, and the final state if it differs),
  while `fired` counts every firing.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from ..protocol import StreamInfo
from .rules import AlertRule


@dataclass(frozen=True, slots=True)
class Transition:
    """One alert changing state. `t` is Unix seconds (the sample's, for limits)."""

    key: int  # stream key
    stream: str  # stream id
    rule: AlertRule
    firing: bool
    value: float | None  # the sample that crossed (None for status alerts and non-finite values)
    t: float

    @property
    def id(self) -> str:
        return f"{self.stream}:{self.rule.name}"

    @property
    def state(self) -> str:
        return "firing" if self.firing else "resolved"

    def to_json(self) -> dict:
        r = self.rule
        return {"type": "alert", "key": self.key, "id": self.id, "stream": self.stream, "channel": r.channel,
                "state": self.state, "severity": r.severity, "value": self.value, "t": self.t, "message": r.message,
                "above": r.above, "below": r.below}


class _Instance:
    """One rule bound to one stream: its state survives batches."""

    __slots__ = ("rule", "key", "stream", "index", "firing", "run_start", "fired", "last", "pending_at")

    def __init__(self, rule: AlertRule, info: StreamInfo):
        self.rule = rule
        self.key = info.key
        self.stream = info.id
        self.index: int | None = None  # the channel's position in the stream (None: not there yet)
        self.firing = False
        # Start of the current run of the samples that would flip the state
        # (breaching while resolved, clear while firing), carried across batches.
        self.run_start: float | None = None
        self.fired = 0  # how often it fired (metrics)
        self.last: Transition | None = None  # the last transition told to the outside
        self.pending_at: float | None = None  # status rules: when the state flips if nothing changes

    def bind(self, info: StreamInfo) -> None:
        names = [c.name for c in info.channels]
        self.index = names.index(self.rule.channel) if self.rule.channel in names else None


def _value(v: float) -> float | None:
    # Values are float32: 7 significant digits say all they hold (4.6, not 4.599999904632568).
    return float(f"{v:.7g}") if math.isfinite(v) else None


def _scan(t: np.ndarray, breach: np.ndarray, firing: bool, run_start: float | None,
          for_s: float, clear_s: float) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Where the state flips within one batch: (sample indices, firing after each flip),
    and the run start to carry into the next batch.

    A resolved alert fires at the first sample that has been in breach for
    `for_s` without a break; a firing one resolves at the first sample that has
    been clear for `clear_s`. The run in progress when the previous batch ended
    (`run_start`) counts.
    """
    n = len(t)
    none = np.empty(0, dtype=np.intp), np.empty(0, dtype=bool)
    # Nothing that could flip the state (the common case): one pass.
    if n == 0 or (breach.all() if firing else not breach.any()):
        return (*none, run_start if n == 0 else None)
    if for_s == 0 and clear_s == 0:
        # No hold: the state is simply the breach, sample by sample (one pass, any amount of flapping).
        prev = np.empty(n, dtype=bool)
        prev[0] = firing
        prev[1:] = breach[:-1]
        at = np.flatnonzero(breach != prev)
        return at, breach[at], None
    at: list[int] = []
    i0 = 0
    while i0 < n:
        # The samples that would flip the state, and how long each has been in such a run.
        want = ~breach[i0:] if firing else breach[i0:]
        hold = clear_s if firing else for_s
        tt = t[i0:]
        idx = np.arange(len(tt))
        first = np.maximum.accumulate(np.where(want, -1, idx)) + 1  # first index of the run each sample is in
        start = tt[np.minimum(first, len(tt) - 1)]
        if run_start is not None:
            start = np.where(first == 0, run_start, start)
        ok = want & (tt - start >= hold)
        j = int(np.argmax(ok))
        if not ok[j]:
            run_start = float(start[-1]) if want[-1] else None
            break
        firing = not firing
        at.append(i0 + j)
        run_start = None
        i0 += j + 1
    idx = np.array(at, dtype=np.intp)
    # flips alternate, starting from the opposite of the state before the batch
    states = (np.arange(len(idx)) % 2 == 0) != (not firing if len(idx) % 2 else firing)
    return idx, states, run_start


#: Rules bound to streams, at most (rules x matching streams): state stays bounded
#: even with many glob rules over many streams. Beyond it a binding is skipped and counted.
MAX_INSTANCES = 65_536


class AlertEngine:
    """Every rule, bound to the streams it covers, and their state."""

    def __init__(self, rules: Iterable[AlertRule] = ()):
        self.rules: list[AlertRule] = []
        self._match: list[re.Pattern] = []
        self._by_key: dict[int, list[_Instance]] = {}
        self._infos: dict[int, StreamInfo] = {}
        self._n = 0  # instances bound
        self.unbound = 0  # bindings skipped at MAX_INSTANCES (the monitor logs them)
        self.add_rules(rules)

    # ------------------------------------------------------------------ set-up

    def add_rules(self, rules: Iterable[AlertRule]) -> None:
        """More rules (before or after their streams appear)."""
        for r in rules:
            m = re.compile(fnmatch.translate(r.stream))
            self.rules.append(r)
            self._match.append(m)
            for key, info in self._infos.items():
                if m.match(info.id) and self._room():
                    inst = _Instance(r, info)
                    inst.bind(info)
                    self._by_key[key].append(inst)

    def _room(self) -> bool:
        if self._n >= MAX_INSTANCES:
            self.unbound += 1
            return False
        self._n += 1
        return True

    def instances(self) -> list[_Instance]:
        return [i for insts in self._by_key.values() for i in insts]

    # ------------------------------------------------------------------ inputs

    def on_stream(self, info: StreamInfo, now: float, wall: float) -> list[Transition]:
        """A stream appeared or changed (channels, status). Status rules may flip now
        (no hold) or later (`tick`)."""
        insts = self._by_key.get(info.key)
        if insts is None:
            insts = self._by_key[info.key] = [
                _Instance(r, info) for r, m in zip(self.rules, self._match) if m.match(info.id) and self._room()
            ]
        for inst in insts:
            inst.bind(info)
        self._infos[info.key] = info
        for inst in insts:
            if inst.rule.is_status:
                self._status_changed(inst, info.status in inst.rule.status, now)
        return self.tick(now, wall, keys=(info.key,))

    def on_removed(self, key: int, wall: float) -> list[Transition]:
        """A stream left the catalog: its firing alerts resolve (nothing is left to watch)."""
        insts = self._by_key.pop(key, ())
        self._infos.pop(key, None)
        self._n -= len(insts)
        return [Transition(i.key, i.stream, i.rule, False, None, wall) for i in insts if i.firing]

    def on_batch(self, key: int, timestamps: np.ndarray, values: np.ndarray) -> list[Transition]:
        """Evaluate the limit rules of stream `key` on one batch (values (C, N))."""
        insts = self._by_key.get(key)
        if not insts:
            return []
        out: list[Transition] = []
        c = values.shape[0]
        for inst in insts:
            idx = inst.index
            if idx is None or idx >= c:  # status rule, or a channel this batch does not carry
                continue
            r = inst.rule
            v = values[idx]
            t = timestamps
            known = ~np.isnan(v)
            if not known.all():
                t, v = t[known], v[known]
            breach = np.zeros(len(v), dtype=bool)
            if r.above is not None:
                breach |= v > r.above
            if r.below is not None:
                breach |= v < r.below
            at, states, inst.run_start = _scan(t, breach, inst.firing, inst.run_start, r.for_ms / 1000, r.clear_ms / 1000)
            if not len(at):
                continue
            inst.fired += int(np.count_nonzero(states))
            inst.firing = bool(states[-1])
            told = [(int(at[0]), bool(states[0]))]
            if len(at) > 1 and states[-1] != states[0]:
                told.append((int(at[-1]), bool(states[-1])))
            for i, f in told:
                tr = Transition(inst.key, inst.stream, r, f, _value(float(v[i])), float(t[i]))
                inst.last = tr
                out.append(tr)
        return out

    def tick(self, now: float, wall: float, keys: Iterable[int] | None = None) -> list[Transition]:
        """Status rules whose hold ran out by `now` flip (wall: Unix time for the message)."""
        out: list[Transition] = []
        groups = self._by_key.items() if keys is None else ((k, self._by_key.get(k, ())) for k in keys)
        for _, insts in groups:
            for inst in insts:
                if inst.pending_at is not None and now >= inst.pending_at:
                    inst.pending_at = None
                    inst.firing = not inst.firing
                    inst.fired += inst.firing
                    tr = Transition(inst.key, inst.stream, inst.rule, inst.firing, None, wall)
                    inst.last = tr
                    out.append(tr)
        return out

    def next_deadline(self) -> float | None:
        """When `tick` next has something to do (None: nothing pending)."""
        due = [i.pending_at for insts in self._by_key.values() for i in insts if i.pending_at is not None]
        return min(due) if due else None

    def _status_changed(self, inst: _Instance, breach: bool, now: float) -> None:
        if breach == inst.firing:
            inst.pending_at = None  # back to where it is: whatever was pending is off
        elif inst.pending_at is None:
            inst.pending_at = now + (inst.rule.clear_ms if inst.firing else inst.rule.for_ms) / 1000

    # ------------------------------------------------------------------ outputs

    def firing(self, keys: Iterable[int] | None = None) -> list[Transition]:
        """The alerts firing now (of these streams), as the transitions that fired them."""
        groups = self._by_key.values() if keys is None else (self._by_key.get(k, ()) for k in keys)
        return [i.last for insts in groups for i in insts if i.firing and i.last is not None]
