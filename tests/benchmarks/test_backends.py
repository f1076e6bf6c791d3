"""Smoke test of `python -m benchmarks.backends` with tiny settings: the JSON has every
backend that runs here, every graph, finite positive timings, and the environment."""

import json
import math

from benchmarks import backends


def test_backends_benchmark_writes_json_and_png(tmp_path):
    assert backends.main(["--batches", "1", "2", "--repeats", "2", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "backends.json").read_text())
    assert (tmp_path / "backends.png").stat().st_size > 1000
    env = result["environment"]
    assert env["cpu_count"] >= 1 and env["versions"]["torch"] and "git_commit" in env
    assert set(result["results"]) == {"torch", "onnxruntime"}
    assert "tensorrt" in result["skipped"]
    for backend in result["results"].values():
        timings = backend["timings_ms"]
        assert set(timings) == {"backbone_b1", "backbone_b2", "temporal_step_b1", "head_b1"}
        for stats in timings.values():
            for key in ("p50", "p90", "p99", "max"):
                assert math.isfinite(stats[key]) and stats[key] > 0
            assert stats["p50"] <= stats["p99"] <= stats["max"]
