"""The streaming detector: runtime backends, detector loop, event tracker, ZeroMQ publisher
and subscriber, Prometheus metrics and the `actstream` command."""
