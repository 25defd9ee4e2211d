"""The garbage collector, set once for a long-running server (`serve` and
`replay` call `tune()` as soon as they listen).

CPython's cycle collector runs a full collection after every ten collections
of the middle generation (once enough has survived), and a full collection
walks every container object in the process: at 5,000 connections that is
~400,000 objects and a 100 ms pause in which no client is served, four times
during a 5,000-client reconnect storm (bench/storm.py). Three changes:

- `gc.freeze()`: what start-up made (modules, numpy, the catalog: ~40,000
  objects that live as long as the process) moves to the permanent
  generation, so no collection walks it again.
- Full collections ten times rarer (threshold 100 instead of 10). Only
  cycles that survived two collections wait longer. Nothing on the data
  path makes cycles, so this bounds memory the same way, later.
- The youngest generation is collected after 10,000 new container objects
  instead of 700 (CPython 3.13 itself went to 2,000). Each connection leaves
  a few hundred long-lived objects; at 700, a 1,000-client storm ran ~80
  young and 7 middle collections that walked them again and again (~12 ms,
  6 % of the storm's CPU), at 10,000 it runs ~6 and no middle one (~7 ms).
  Short-lived cycles (exceptions with their tracebacks) still go within
  10,000 allocations: a few hundred KiB at most.

Measured (docs/performance.md, "Handshake storm"): server CPU per connection in
a 5,000-client storm 357 -> 253 us; no full collection during the storm.
"""

from __future__ import annotations

import gc

#: (young, middle, full): CPython's defaults are (700, 10, 10).
THRESHOLDS = (10_000, 10, 100)


def tune() -> None:
    """Freeze what exists now and make full collections rarer. Call once, when
    start-up is over; calling again only freezes what has been made since."""
    gc.collect()  # start-up's garbage goes now, not into the permanent generation
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
