"""sensorstream: live sensor data from devices to the browser.

The package reads as a pipeline, one module per stage:

    sources/  ->  ingest/ (parsing, batching, feed)  ->  hub  ->  server/  ->  client
"""

__version__ = "0.1.0"
