"""Smoke tests of every benchmark with tiny settings: each writes its JSON (environment
included) and PNG, and its numbers are finite and positive."""

import json
import math

import pytest

from benchmarks import (
    backends,
    capacity,
    components,
    cpu_precisions,
    end_to_end,
    phases,
    pipeline_efficiency,
    profiles,
    quick,
    reader_cost,
    step_vs_recompute,
    store_and_clips,
)

pytestmark = pytest.mark.slow


def load(path):
    result = json.loads(path.read_text())
    assert path.with_suffix(".png").stat().st_size > 1000
    env = result["environment"]
    assert env["cpu_count"] >= 1 and env["versions"]["torch"] and "git_commit" in env
    assert set(env["cpu_features"]) >= {"avx2", "avx512", "avx512_vnni", "amx_int8", "amx_bf16"}
    return result


def check_stats(stats):
    for key in ("p50", "p90", "p99", "max"):
        assert math.isfinite(stats[key]) and stats[key] > 0, stats
    assert stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"]


def test_backends(tmp_path):
    assert backends.main(["--batches", "1", "2", "--repeats", "2", "--out", str(tmp_path)]) == 0
    result = load(tmp_path / "backends.json")
    assert set(result["results"]) == {"torch", "onnxruntime"}
    assert "tensorrt" in result["skipped"]
    for backend in result["results"].values():
        timings = backend["timings_ms"]
        assert set(timings) == {"backbone_b1", "backbone_b2", "temporal_step_b1", "head_b1"}
        for stats in timings.values():
            check_stats(stats)


def test_cpu_precisions(tmp_path):
    args = ["--backbones", "builtin", "--seconds", "0.05", "--out", str(tmp_path)]
    assert cpu_precisions.main(args) == 0
    rows = load(tmp_path / "cpu_precisions.json")["rows"]
    timed = {(r["backend"], r["precision"]): r for r in rows if "frames_per_s" in r}
    assert timed[("onnxruntime", "fp32")]["vs_onnxruntime_fp32"] == 1.0
    assert {("torch", "fp32"), ("openvino", "fp32")} <= set(timed)
    for r in timed.values():
        assert r["frames_per_s"] > 0 and 0 < r["fraction_of_peak"] and r["gflop_per_frame"] > 0
        assert r["max_relative_error"] <= 0.1
    assert all("skipped" in r for r in rows if "frames_per_s" not in r)


def test_profiles_substream_through_rtsp_and_synthetic(tmp_path):
    args = ["--profiles", "synthetic", "substream", "--backbones", "builtin", "--streams", "2",
            "--phase-s", "1.5", "--duration-s", "2", "--warmup-s", "0.5", "--max-streams", "2",
            "--readers", "process", "--out", str(tmp_path)]  # fmt: skip
    assert profiles.main(args) == 0
    rows = load(tmp_path / "profiles.json")["rows"]
    assert [(r["profile"], r["backbone"], r["engine"]) for r in rows] == [
        ("synthetic", "builtin", "onnxruntime:fp32"),
        ("substream", "builtin", "onnxruntime:fp32"),
    ]
    for r in rows:
        for key in ("decode_only_fps", "model_only_fps", "end_to_end_fps", "efficiency"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert {"decode", "inference", "native"} <= set(r["end_to_end_cores"])
        assert r["readers"] == "process" and r["end_to_end_cores"]["decode"] > 0  # the children
        assert 0 <= r["capacity_streams"] <= 2
        for trial in r["capacity_trials"].values():
            assert trial["frames_processed"] > 0 and trial["seconds"] > 0
    camera = rows[1]
    assert camera["video"]["bitrate_kbit_s"] > 300  # the noise makes the encoder spend bits
    assert all("rtsp_server" in t["cores"] for t in camera["capacity_trials"].values())
    if camera["capacity_streams"]:
        check_stats(camera["half_capacity"]["frame_to_decision_ms"])


@pytest.mark.parametrize("limit", [0, 1, 7, 13, 40, 64])
def test_capacity_search_finds_the_largest_count_held(limit):
    tried = []

    def live(n):
        tried.append(n)
        return {"held": n <= limit, "frames_processed": 1, "frames_expected": 1,
                "frames_dropped": 0}  # fmt: skip

    found, trials = phases.capacity(live, estimate=10, max_streams=64)
    assert found == limit and set(trials) == set(tried) and len(tried) == len(set(tried))
    assert len(tried) <= 12


def test_components(tmp_path):
    args = ["--batches", "1", "2", "--repeats", "3", "--video-size", "96", "--out", str(tmp_path)]
    assert components.main(args) == 0
    stages = load(tmp_path / "components.json")["stages_ms"]
    for name in ("decode_h264_96px", "resize_convert_to_64px_rgb", "backbone_b1", "backbone_b2"):
        check_stats(stages[name])
    for name in ("temporal_step", "head_window", "tracker_update", "publish_to_socket"):
        check_stats(stages[name])


def test_step_vs_recompute(tmp_path):
    args = ["--windows", "64", "128", "--lengths", "50", "100", "--repeats", "2", "--sample", "20"]
    assert step_vs_recompute.main([*args, "--out", str(tmp_path)]) == 0
    result = load(tmp_path / "step_vs_recompute.json")
    for stats in [*result["recompute_ms"].values(), *result["step_ms"].values()]:
        check_stats(stats)
    assert result["step_flatness"] > 0 and result["speedup_vs_recompute"]["128"] > 0
    assert set(result["targets"]) >= {"step_flat_met", "speedup_met"}


def test_end_to_end(tmp_path):
    args = ["--streams", "2", "--duration-s", "8", "--out", str(tmp_path)]
    assert end_to_end.main(args) == 0
    result = load(tmp_path / "end_to_end_2streams.json")
    assert result["frames_processed"] > 0.8 * result["frames_expected"] > 0
    assert result["events"] > 0, "the bundled model sees actions in 8 s of two streams"
    check_stats(result["frame_to_event_ms"])
    check_stats(result["delivery_ms"])
    assert 0 < result["onset_delay_s"]["p50"] < 5
    assert set(result["stages"]) == {"preprocess", "backbone", "temporal", "head", "track"}


def test_capacity(tmp_path):
    args = ["--start", "1", "--max-streams", "2", "--duration-s", "4", "--out", str(tmp_path)]
    assert capacity.main(args) == 0
    result = load(tmp_path / "capacity.json")
    assert set(result["trials"]) == {"1", "2"} and result["capacity_streams"] == 2
    for trial in result["trials"].values():
        assert trial["frames_processed"] > 0 and trial["frames_dropped"] == 0


def test_pipeline_efficiency(tmp_path):
    args = ["--streams", "2", "--video-s", "5", "--video-size", "64", "--out", str(tmp_path)]
    assert pipeline_efficiency.main(args) == 0
    result = load(tmp_path / "pipeline_efficiency_2streams.json")
    assert result["frames"] == 2 * 50
    for fps in result["throughput_fps"].values():
        assert math.isfinite(fps) and fps > 0
    assert 0 < result["efficiency"] <= 1.5
    assert all(0 < c <= result["cpu_count"] + 0.5 for c in result["cores_busy"].values())
    fps = result["throughput_fps"]
    bound = 1 / (1 / fps["decode_only"] + 1 / fps["model_only"])
    assert result["shared_cpu_bound_fps"] == pytest.approx(bound)
    assert 0 < result["efficiency_bound"] <= 1.0


def test_store_and_clips(tmp_path):
    args = ["--streams", "1", "--rate-streams", "2", "--rounds", "1", "--duration-s", "4",
            "--clip-streams", "1", "--clip-video-s", "8", "--clip-size", "96x72",
            "--clip-rounds", "1", "--out", str(tmp_path)]  # fmt: skip
    assert store_and_clips.main(args) == 0
    result = load(tmp_path / "store_and_clips.json")
    store = result["store"]
    assert [r["store"] for r in store["runs"]] == [False, True]
    on = store["runs"][1]
    assert on["store_written"] > 0 and on["store_dropped"] == 0 and on["store_errors"] == 0
    assert math.isfinite(store["p99_ratio"]) and store["p99_ratio"] > 0
    clips = result["clips"]
    assert all(r["clips"] > 0 for r in clips["runs"]["clips"])
    assert all(r["clips"] == 0 for r in clips["runs"]["no_clips"])
    assert clips["writer_cpu_ms_per_clip"] > 0


def test_quick_subset_prints_the_table(tmp_path, capsys):
    assert (
        quick.main(
            ["--out", str(tmp_path), "--duration-s", "6", "--streams", "2", "--repeats", "3"]
        )
        == 0
    )
    table = capsys.readouterr().out
    for row in ("backbone_b16", "step vs recompute (512 window)", "frame-to-event ms, 2 streams"):
        assert row in table


def test_reader_cost_measures_threads_and_processes_in_one_run(tmp_path):
    args = ["--streams", "2", "--seconds", "1.5", "--video-s", "6", "--out", str(tmp_path)]
    assert reader_cost.main(args) == 0
    result = load(tmp_path / "reader_cost.json")
    assert [r["readers"] for r in result["rows"]] == ["thread", "process"]
    for r in result["rows"]:
        assert r["frames_per_s"] > 0 and math.isfinite(r["cpu_ms_per_frame"])
        assert r["cores"]["decode"] > 0, r  # the reader processes' CPU is seen too
    assert math.isfinite(result["ratio"]) and result["ratio"] > 0
