"""Latency and throughput benchmarks; each is `python -m benchmarks.<name>` and writes JSON."""
