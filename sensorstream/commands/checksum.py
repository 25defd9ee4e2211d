"""Checksums a polled device expects after its request bytes. Pure; checked against
the catalogue's check values (the checksum of b"123456789") in the tests.

======================  ==========================================  ========  =======
name                    definition                                  appended  check
======================  ==========================================  ========  =======
``crc8``                CRC-8 (poly 0x07, init 0, no reflection)    1 byte    0xF4
``crc16-modbus``        CRC-16/MODBUS (poly 0x8005 reflected,       2 bytes,  0x4B37
                        init 0xFFFF)                                low first
``xor``                 XOR of every byte                           1 byte    0x31
``sum8``                sum of every byte, modulo 256               1 byte    0xDD
======================  ==========================================  ========  =======
"""

from __future__ import annotations

from collections.abc import Callable
from functools import reduce


def _table(poly: int, reflected: bool, width: int) -> tuple[int, ...]:
    top, mask = 1 << (width - 1), (1 << width) - 1
    out = []
    for byte in range(256):
        if reflected:
            crc = byte
            for _ in range(8):
                crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        else:
            crc = byte << (width - 8)
            for _ in range(8):
                crc = ((crc << 1) ^ poly if crc & top else crc << 1) & mask
        out.append(crc)
    return tuple(out)


_CRC8 = _table(0x07, False, 8)
_MODBUS = _table(0xA001, True, 16)  # 0x8005 bit-reversed


def crc8(data: bytes) -> int:
    crc = 0
    for b in data:
        crc = _CRC8[crc ^ b]
    return crc


def crc16_modbus(data: bytes) -> int:
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _MODBUS[(crc ^ b) & 0xFF]
    return crc


def xor8(data: bytes) -> int:
    return reduce(lambda a, b: a ^ b, data, 0)


def sum8(data: bytes) -> int:
    return sum(data) & 0xFF


#: name -> (function, bytes appended, little-endian)
CHECKSUMS: dict[str, tuple[Callable[[bytes], int], int]] = {
    "crc8": (crc8, 1),
    "crc16-modbus": (crc16_modbus, 2),
    "xor": (xor8, 1),
    "sum8": (sum8, 1),
}


def append_checksum(data: bytes, kind: str | None) -> bytes:
    """``data`` followed by its checksum (Modbus sends the CRC low byte first)."""
    if kind is None:
        return data
    try:
        fn, size = CHECKSUMS[kind]
    except KeyError:
        raise ValueError(f"unknown checksum {kind!r}; expected one of {sorted(CHECKSUMS)}") from None
    return data + fn(data).to_bytes(size, "little")
