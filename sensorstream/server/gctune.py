"""The garbage collector, set once for a long-running server (`serve` and
`replay` call `tune()` as soon as they listen).

CPython's cycle collector runs a full collection after every ten collections
of the middle generation (once enough has survived), and a full collection
walks every container object in the process: at 5,000 connections that is
~400,000 objects and a 100 ms pause in which no client is served, four times
during a 5,000-client reconnect storm (bench/storm.py). Two changes:

- `gc.freeze()`: what start-up made (modules, numpy, the catalog: ~40,000
  objects that live as long as the process) moves to the permanent
  generation, so no collection walks it again.
- Full collections ten times rarer (threshold 100 instead of 10). The young
  generations are collected as often as before, so short-lived cycles
  (exceptions with their tracebacks, most of what trio leaves) go at once;
  only cycles that survived two collections wait longer. Nothing on the data
  path makes cycles, so this bounds memory the same way, later.

Measured (docs/performance.md, "Handshake storm"): server CPU per connection in
a 5,000-client storm 357 -> 253 us; no full collection during the storm.
"""

from __future__ import annotations

import gc

#: (young, middle, full): CPython's defaults are (700, 10, 10).
THRESHOLDS = (700, 10, 100)


def tune() -> None:
    """Freeze what exists now and make full collections rarer. Call once, when
    start-up is over; calling again only freezes what has been made since."""
    gc.collect()  # start-up's garbage goes now, not into the permanent generation
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
