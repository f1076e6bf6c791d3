"""The training package's commands, one module each with its parser beside its handler:
`synth`, `train`, `eval`, and `bench` (the one command above every package: it runs the
benchmarks, a declared exception in tests/test_boundaries.py)."""
