"""The ingest side: bytes from a device -> samples -> batches for the hub.

Read in this order: ``parsing`` (bytes -> numpy columns, sans-I/O; ``cobs`` frames
the binary format), ``batching`` (samples -> numbered batches, sans-I/O) and
``feed`` (the thin trio piece every source shares: push samples, publish batches).
The sources that drive them live in ``sensorstream.sources``.
"""
