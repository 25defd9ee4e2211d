"""Byte stream -> lines or 0x00-delimited frames (:class:`Framer`), shared by every format.

* LF, CR and CRLF all end a line; a CRLF split across two feeds is still one ending.
* The first line after connecting is discarded (it is usually the tail of a line the
  device was half-way through); ``discard_first_partial=False`` keeps it.
* A line longer than ``max_line`` bytes is discarded as it arrives, never buffered whole.
* Every line ending is accounted for exactly once::

      lines_ok + lines_malformed + lines_oversize + lines_empty + lines_partial
          == number of line endings seen (CRLF counts once)

  and for COBS the same holds with "0x00 delimiters" for "line endings".
"""

from __future__ import annotations

from .results import ParseCounters


class Framer:
    """Splits a byte stream into frames: lines (``text=True``) or 0x00-delimited frames.

    Keeps at most ``max_len`` bytes of an unfinished frame; counts what it discards.
    """

    def __init__(self, *, text: bool, max_len: int, discard_first: bool):
        if max_len < 1:
            raise ValueError("max_len must be positive")
        self.text = text
        self.max_len = max_len
        self.discard_first = discard_first
        self.restart()

    def restart(self) -> None:
        self._buf = b""
        self._skipping = False  # inside an oversize frame: drop bytes up to its end
        self._after_cr = False  # last byte seen was CR: a leading LF completes a CRLF
        self._first = self.discard_first

    def split(self, data: bytes, c: ParseCounters) -> list[bytes]:
        if self.text:
            if self._after_cr and data[:1] == b"\n":
                data = data[1:]  # the LF of a CRLF whose CR ended the previous chunk
                self._after_cr = False
            if not data:
                return []
            self._after_cr = data[-1:] == b"\r"
            if b"\r" in data:
                data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            parts = data.split(b"\n")
        else:
            if not data:
                return []
            parts = data.split(b"\x00")
        rest = parts.pop()
        if parts:
            # The first complete frame finishes whatever was pending from earlier reads.
            head = parts[0] if self._skipping else self._buf + parts[0]
            self._buf = b""
            if self._first or self._skipping:
                if self._first:
                    c.lines_partial += 1
                else:
                    c.lines_oversize += 1
                c.bytes_discarded += len(head)
                self._first = self._skipping = False
                del parts[0]
            else:
                parts[0] = head
            if parts and max(map(len, parts)) > self.max_len:
                keep = []
                for p in parts:
                    if len(p) > self.max_len:
                        c.lines_oversize += 1
                        c.bytes_discarded += len(p)
                    else:
                        keep.append(p)
                parts = keep
        if rest:
            if self._skipping:
                c.bytes_discarded += len(rest)
            elif len(self._buf) + len(rest) > self.max_len:
                c.bytes_discarded += len(self._buf) + len(rest)
                self._buf = b""
                self._skipping = True
            else:
                self._buf += rest
        return parts

