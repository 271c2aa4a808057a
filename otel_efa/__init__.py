"""otel-efa: AWS EFA network counters as OpenTelemetry metrics."""
__version__ = "0.1.0"
