"""Talking back to devices: commands from clients, periodic polls, device console lines.

Sans-I/O cores, one per file: ``checksum`` (CRC-8, CRC-16/MODBUS, XOR, sum-8),
``encoding`` (text + line ending or hex -> bytes; profile action templates),
``writequeue`` (the bounded per-port write queue), ``console`` (raw device lines,
rate- and size-limited), ``profile`` (a device profile's ``[[actions]]`` and
``[[poll]]``, and the poll schedule). ``port`` is one device's write side, with
the trio task that writes it without blocking; ``registry`` is what the server
consults: which streams take commands, who may send, and the counters.
docs/devices.md and docs/security.md describe the behaviour.
"""
