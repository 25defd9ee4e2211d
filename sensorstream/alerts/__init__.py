"""Threshold alerts, evaluated on the server so they work with no browser open.

- `rules`: `[[alerts]]` tables (device profiles, `--config`) -> `AlertRule`s, checked.
- `engine`: the sans-I/O evaluator: numpy batches and stream statuses in,
  `Transition`s out (firing / resolved). No clock, no sockets.
- `monitor`: the thin trio/hub glue: feeds the engine from the hub, tells the
  subscribers, the webhook and /metrics.
- `webhook`: POSTs each transition as JSON (h11 over a trio socket), from a
  bounded queue, with retries and backoff, off the data path.

The user-facing description is docs/alerts.md.
"""

from .engine import AlertEngine, Transition
from .rules import AlertRule, RuleError, parse_rules

__all__ = ["AlertEngine", "AlertRule", "RuleError", "Transition", "parse_rules"]
