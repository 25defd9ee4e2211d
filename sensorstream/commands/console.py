"""Raw device lines for clients that asked (``"console": true``), rate- and size-limited. Pure.

Lines the parser could not turn into numbers (banners, ``OK``, error messages,
echoes of commands) are collected per stream and handed out in one message per
read. A line is cut to ``max_line`` characters; at most ``rate`` lines a second
(``burst`` at once) go out per stream, the rest are counted as dropped and the
count rides on the next message that goes out (``dropped``: lines left out
between the previous message and this one), so a device spewing garbage costs
clients a bounded trickle.
"""

from __future__ import annotations

MAX_LINE_CHARS = 256
LINES_PER_S = 50.0
BURST = 100


class ConsoleLimiter:
    def __init__(self, rate: float = LINES_PER_S, burst: int = BURST, max_line: int = MAX_LINE_CHARS):
        self.rate = rate
        self.burst = burst
        self.max_line = max_line
        self._tokens = float(burst)
        self._t: float | None = None
        self.dropped = 0  # lines dropped since the last message that went out

    def take(self, lines: list[bytes], now: float) -> tuple[list[str], int]:
        """(lines to send now as text, lines dropped since the last ones sent), or ([], 0)."""
        if self._t is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._t) * self.rate)
        self._t = now
        n = min(len(lines), int(self._tokens))
        self._tokens -= n
        if not n:
            self.dropped += len(lines)
            return [], 0
        out = [line[: self.max_line * 4].decode("utf-8", "replace")[: self.max_line] for line in lines[:n]]
        # Lines dropped before these are reported with them; those after them, next time.
        dropped, self.dropped = self.dropped, len(lines) - n
        return out, dropped
