"""Consistent Overhead Byte Stuffing (COBS), pure and vectorised.

COBS turns a record that may contain 0x00 into one that does not, so 0x00 can
delimit frames on a byte stream: after a dropped or corrupted byte the reader
re-synchronises at the next 0x00. Each encoded frame is a chain of blocks
``code, data[code-1]``; every block with code < 0xFF stands for its data
followed by one 0x00, except the last block, whose implicit zero is dropped.

``decode_fixed`` decodes a whole chunk of same-length frames at once: it follows
the code chains of all frames together with numpy (one step per zero byte in the
longest record, not one per byte), which is what makes the binary ingest path
fast. ``encode``/``decode`` are the one-frame reference versions.
"""

from __future__ import annotations

from itertools import compress

import numpy as np

__all__ = ["encode", "decode", "decode_fixed", "encoded_size"]


def encode(data: bytes) -> bytes:
    """COBS-encode one record (without the 0x00 delimiter)."""
    out = bytearray()
    for block in data.split(b"\x00"):
        # A zero-free run longer than 254 bytes is cut into 0xFF blocks, which carry no zero.
        while len(block) >= 254:
            out.append(0xFF)
            out += block[:254]
            block = block[254:]
        out.append(len(block) + 1)
        out += block
    return bytes(out)


def decode(frame: bytes) -> bytes:
    """Decode one COBS frame (without its delimiter). Raises ValueError if it is not valid COBS."""
    out = bytearray()
    i, n = 0, len(frame)
    while i < n:
        code = frame[i]
        if code == 0:
            raise ValueError("0x00 inside a COBS frame")
        end = i + code
        if end > n:
            raise ValueError("COBS block runs past the end of the frame")
        out += frame[i + 1 : end]
        if b"\x00" in frame[i + 1 : end]:
            raise ValueError("0x00 inside a COBS frame")
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encoded_size(record_size: int) -> int:
    """The encoded length of a record of ``record_size`` bytes, if that is fixed (records < 254 bytes).

    Below 254 bytes every record encodes to exactly ``record_size + 1`` bytes whatever
    its content; above, the length depends on where the zeros are.
    """
    if record_size >= 254:
        raise ValueError("records of 254 bytes or more have no fixed COBS length")
    return record_size + 1


def decode_fixed(frames: list[bytes], record_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode many frames of one record size (< 254 bytes) in bulk.

    Returns ``(records, ok)``: ``records`` is a C-contiguous uint8 array of shape
    (M, record_size) holding the decoded frames that are valid, ``ok`` a bool mask
    over ``frames`` saying which those are. A frame is invalid if its length is not
    ``record_size + 1``, if it contains 0x00, or if its code chain does not end
    exactly at its last byte.
    """
    length = encoded_size(record_size)
    # map(len) runs in C; a generator expression here was 40 % of a 64 KiB decode.
    ok = np.fromiter(map(len, frames), dtype=np.intp, count=len(frames)) == length
    good = frames if ok.all() else list(compress(frames, ok))
    m = len(good)
    if m == 0:
        return np.empty((0, record_size), np.uint8), ok
    enc = np.frombuffer(b"".join(good), dtype=np.uint8).reshape(m, length)
    # Follow every frame's code chain in step: pos is each frame's current code byte.
    zero_at = np.zeros((m, length), dtype=bool)  # code positions after the first = decoded zeros
    valid = enc.all(axis=1)  # a frame never contains 0x00 (the framer split on it, but be exact)
    rows = np.arange(m)
    pos = np.zeros(m, dtype=np.intp)
    while rows.size:
        pos = pos + enc[rows, pos]
        inside = pos < length
        valid[rows[pos > length]] = False  # chain overshoots: truncated or corrupted
        rows, pos = rows[inside], pos[inside]
        zero_at[rows, pos] = True
    dec = enc[:, 1:].copy()
    dec[zero_at[:, 1:]] = 0
    if not valid.all():
        dec = np.ascontiguousarray(dec[valid])
        ok[np.flatnonzero(ok)[~valid]] = False
    return dec, ok
