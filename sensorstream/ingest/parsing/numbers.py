"""Tokens -> float64, in bulk (:func:`scan_numbers`): the hot loop of every text format."""

from __future__ import annotations

import math
from itertools import chain

import numpy as np

_POW10 = 10.0 ** np.arange(23)
#: Below this many bytes, :func:`scan_numbers` converts token by token (see there).
SMALL_BYTES = 2048
_FAST_LEN = 15  # a token of <= 15 characters has a mantissa < 10**15 < 2**53: exact in float64
_U64 = np.uint64
_ONES = _U64(0x0101010101010101)
# Byte j of the last word holds 1 + the number of bytes after it (8 - j), of the word before
# that, 16 - j: masked by a one-byte dot flag and byte-summed, it gives 1 + digits after the dot.
_AFTER = np.array([sum((16 - j) << (8 * j) for j in range(8)), sum((8 - j) << (8 * j) for j in range(8))], dtype=_U64)


def _byte_sum(words: np.ndarray) -> np.ndarray:
    """Sum of the bytes of each row of uint64 words (every sum < 256)."""
    total = words[:, 0] if words.shape[1] == 1 else words[:, 0] + words[:, 1]
    return (total * _ONES) >> _U64(56)


def _eight_digits(x: np.ndarray) -> np.ndarray:
    """SWAR: 8 digit values (one per byte, 0..9) in little-endian uint64s -> their integer value."""
    x = (x * _U64(2561)) >> _U64(8)
    x = ((x & _U64(0x00FF00FF00FF00FF)) * _U64(6553601)) >> _U64(16)
    return ((x & _U64(0x0000FFFF0000FFFF)) * _U64(42949672960001)) >> _U64(32)


def scan_numbers(buf: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse every token of ``buf``, a sequence of lines (LF) of space-separated tokens.

    ``buf`` must hold no other ASCII whitespace (callers translate it to spaces).
    Returns ``(values, invalid, line_of)``: float64 values (NaN where a token is not a
    number), a bool mask of those, and the line each token is on.

    Below SMALL_BYTES bytes, ``float()`` per token is cheaper than the fixed cost of
    the ~40 numpy calls of the bulk path; both give the same results.

    Plain decimals (``-12.345``, ``7``, ``.5``; at most 15 characters) are parsed in
    bulk, SWAR-style: each token's last 8 (or 16) bytes are loaded as little-endian
    uint64 words, the bytes before the token shifted out, sign and dot masked to 0,
    and the digits combined with three multiplies per word. That gives the decimal
    mantissa exactly (< 2**53); the dot's place is taken out and one division by a
    power of ten rounds correctly, so each value equals ``float(token)`` bit for bit.
    Anything else (exponents, nan/inf, long tokens, garbage) goes through ``float()``.
    """
    n = len(buf)
    if n < SMALL_BYTES:
        return _numbers_small(buf)
    u = np.frombuffer(buf, dtype=np.uint8)
    word = (u != 32) & (u != 10)
    edge = np.zeros(n + 1, dtype=bool)
    if n:
        edge[0] = word[0]
        edge[n] = word[-1]
        np.not_equal(word[1:], word[:-1], out=edge[1:n])
    b = np.flatnonzero(edge)
    starts, ends = b[0::2], b[1::2]
    t = starts.size
    values = np.full(t, np.nan)
    invalid = np.zeros(t, dtype=bool)
    line_of = np.searchsorted(np.flatnonzero(u == 10), starts)
    if t == 0:
        return values, invalid, line_of
    lens = ends - starts
    nw = 1 if lens.max() <= 8 else 2
    w = 8 * nw
    # Unaligned uint64 loads: row i holds the w bytes ending at token i's end.
    pad = np.frombuffer(bytes(w) + buf, dtype=np.uint8)
    u64 = np.ndarray(shape=(pad.size - 7,), dtype="<u8", buffer=pad, strides=(1,))
    x = np.empty((t, nw), dtype=_U64)
    # Bytes before the token are the low-order ones: shift them out (to 0x00).
    if nw == 1:
        shift = (8 * (8 - lens)).astype(_U64)
        x[:, 0] = (u64[ends] >> shift) << shift
    else:
        short = lens <= 8
        shift = (8 * (16 - np.minimum(lens, 16))).astype(_U64)
        s0 = np.where(short, 0, shift).astype(_U64)
        s1 = np.where(short, shift - _U64(64), 0).astype(_U64)
        x[:, 0] = np.where(short, 0, (u64[ends] >> s0) << s0)
        x[:, 1] = (u64[ends + 8] >> s1) << s1
    xb = x.view(np.uint8).reshape(t, w)
    nondigit = ((xb - np.uint8(48)) > 9).view(_U64)  # 0/1 per byte: 0x00 padding, '.', '-', '+', ...
    dots = (xb == 46).view(_U64)
    n_nondigit = _byte_sum(nondigit).astype(np.intp) - (w - lens)
    n_dot = _byte_sum(dots).astype(np.intp)
    first = u[starts]
    signed = (first == 45) | (first == 43)
    ok = (n_nondigit == n_dot + signed) & (n_dot <= 1) & (lens > n_nondigit) & (lens <= _FAST_LEN)
    digits = _eight_digits(x & ~(nondigit * _U64(0xFF)) & _U64(0x0F0F0F0F0F0F0F0F))
    s1f = (digits[:, 0] if nw == 1 else digits[:, 0] * _U64(100_000_000) + digits[:, 1]).astype(np.float64)
    # A dot takes a digit's place (as a 0): with f digits after it, s1 = hi * 10**(f+1) + lo
    # and the mantissa is hi * 10**f + lo. Without a dot, q = 1 and the mantissa is s1.
    frac = (_byte_sum((dots * _U64(0xFF)) & _AFTER[-nw:]).astype(np.intp) - 1) * (n_dot == 1)
    q = _POW10[frac + (n_dot == 1)]
    hi = np.floor(s1f / q)
    p = _POW10[frac]
    v = (hi * p + (s1f - hi * q)) / p
    v *= np.where(first == 45, -1.0, 1.0)
    values[ok] = v[ok]
    for i in np.flatnonzero(~ok).tolist():
        try:
            values[i] = float(buf[starts[i] : ends[i]])
        except ValueError:
            invalid[i] = True
    return values, invalid, line_of


def _numbers_small(buf: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`scan_numbers` for a few hundred tokens: ``float()`` each."""
    per_line = [line.split() for line in buf.split(b"\n")]
    toks = list(chain.from_iterable(per_line))
    line_of = np.repeat(np.arange(len(per_line)), list(map(len, per_line)))
    try:
        return np.array(list(map(float, toks)), dtype=np.float64), np.zeros(len(toks), bool), line_of
    except ValueError:
        values = np.empty(len(toks))
        invalid = np.zeros(len(toks), bool)
        for i, tok in enumerate(toks):
            try:
                values[i] = float(tok)
            except ValueError:
                values[i] = math.nan
                invalid[i] = True
        return values, invalid, line_of


def to_float(tok: bytes | str) -> float | None:
    try:
        return float(tok)
    except ValueError:
        return None

