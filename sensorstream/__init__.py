"""sensorstream: live sensor data from devices to the browser.

The package reads as a pipeline, one module per stage:

    sources/  ->  parsing  ->  batching  ->  hub  ->  server/  ->  client
"""

__version__ = "0.1.0"
