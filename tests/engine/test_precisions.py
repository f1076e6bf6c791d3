"""CPU precisions (bf16, int8) and the OpenVINO backend: refusals that name the missing CPU
unit, a round trip per backend x precision through an engine directory with its accuracy
check, `auto` by measurement, and OpenVINO's events against ONNX Runtime's."""

import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from engine.backends.base import BackendError
from engine.backends.choice import check_precision
from engine.backends.compile import compile_engine, load_engine
from engine.backends.manifest import EngineError, read_manifest
from engine.backends.measure import choose, compile_auto
from engine.backends.torch_backend import TorchBackend
from engine.backends.verify import ACCURACY_BOUNDS, AccuracyError, max_relative_error
from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.config import load_config
from engine.cpu import FEATURES_OFF_ENV, precision_problem
from models.action_model import build_model
from stream.synthetic import SyntheticScene
from tests.conftest import run_cli
from tests.engine.test_compile import small
from training.evaluate import replay, replay_backend
from training.synth import write_video

ROOT = Path(__file__).resolve().parents[2]
NO_UNITS = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 avx512f\n"


def calibration(config, n: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    s = config.backbone.image_size
    images = rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)
    return images, np.roll(images, 1, axis=0)


def needs_units(precision: str) -> None:
    problem = precision_problem(precision)
    if problem:
        pytest.skip(problem)


def test_a_missing_cpu_unit_refuses_its_precision_by_name(monkeypatch):
    assert "avx512_bf16 or amx_bf16" in precision_problem("bf16", NO_UNITS)
    assert "avx512_vnni or avx_vnni or amx_int8" in precision_problem("int8", NO_UNITS)
    assert precision_problem("fp32", NO_UNITS) is None
    monkeypatch.setenv(FEATURES_OFF_ENV, "avx512_bf16,amx_bf16")
    with pytest.raises(BackendError, match="bf16 needs a CPU with avx512_bf16 or amx_bf16"):
        check_precision("bf16", "cpu", "openvino")
    monkeypatch.setenv(FEATURES_OFF_ENV, "avx512_vnni, avx_vnni, amx_int8")
    with pytest.raises(BackendError, match="int8 needs a CPU with avx512_vnni"):
        check_precision("int8", "cpu", "onnxruntime")
    monkeypatch.setenv(FEATURES_OFF_ENV, "amx_magic")
    with pytest.raises(ValueError, match="amx_magic; known units: avx2"):
        precision_problem("bf16")


@pytest.mark.parametrize(
    ("backend", "precision", "device", "message"),
    [
        ("onnxruntime", "bf16", "cpu", "onnxruntime offers precision fp32 / fp16 / int8"),
        ("torch", "int8", "cpu", "torch offers precision fp32 / fp16 / bf16"),
        ("openvino", "fp16", "cpu", "openvino offers precision fp32 / bf16 / int8"),
        ("torch", "bf16", "cuda", "bf16 is a CPU precision here"),
        ("torch", "fp16", "cpu", "fp16 needs a CUDA device"),
    ],
)
def test_a_precision_the_backend_or_device_cannot_run_is_refused(
    backend, precision, device, message
):
    with pytest.raises(BackendError, match=message):
        check_precision(precision, device, backend)


def test_compile_command_names_the_missing_unit_and_writes_nothing(tmp_path):
    model, config = small()
    path = tmp_path / "small.pt"
    save_checkpoint(path, model, config, step=1)
    out = tmp_path / "engine"
    env = dict(os.environ, **{FEATURES_OFF_ENV: "avx512_bf16,amx_bf16"})
    result = run_cli(
        "compile", str(path), "--backend", "torch", "--precision", "bf16", "--out", str(out),
        env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "precision bf16 needs a CPU with avx512_bf16 or amx_bf16" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


ROUND_TRIPS = [
    ("torch", "bf16"),
    ("onnxruntime", "int8"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
    ("openvino", "int8"),
]


@pytest.mark.parametrize(("backend", "precision"), ROUND_TRIPS)
def test_precision_round_trip_through_an_engine_directory(tmp_path, backend, precision):
    needs_units(precision)
    model, config = small()
    out = tmp_path / "engine"
    manifest = compile_engine(
        model, config, out, backend=backend, precision=precision, max_batch=8,
        calibration=calibration(config), verify=True,
    )  # fmt: skip
    bound = ACCURACY_BOUNDS[precision]
    recorded = manifest.notes["max_relative_error"]
    assert set(recorded) >= {"backbone", "temporal_step"} and max(recorded.values()) <= bound
    again = read_manifest(out)
    assert (again.backend, again.precision) == (backend, precision)
    assert again.notes["max_relative_error"] == recorded
    loaded, _ = load_engine(out)
    assert (loaded.name, loaded.precision) == (backend, precision)
    errors = max_relative_error(TorchBackend(model), loaded, config, batch=3, seed=5)
    assert max(errors.values()) <= bound, errors
    if precision == "fp32":
        assert max(errors.values()) <= 1e-4, errors
    else:  # it really computed in the reduced precision
        assert errors["backbone"] > 1e-5, errors
    if precision == "int8":
        ops = {g: {n.op_type for n in onnx.load(out / f"{g}.onnx").graph.node} for g in
               ("backbone", "temporal_step", "head")}  # fmt: skip
        assert "QuantizeLinear" in ops["backbone"] and "DequantizeLinear" in ops["backbone"]
        assert "QuantizeLinear" not in ops["temporal_step"] | ops["head"]
        assert manifest.notes["int8_graphs"] == ["backbone"]
        assert manifest.notes["calibration_frames"] == 8  # every other frame; the rest check it


def test_int8_needs_calibration_frames(tmp_path):
    model, config = small()
    with pytest.raises(BackendError, match="int8 needs calibration frames"):
        compile_engine(model, config, tmp_path / "e", backend="onnxruntime", precision="int8",
                       max_batch=8)  # fmt: skip
    assert not (tmp_path / "e").exists()


def test_a_difference_beyond_the_precision_bound_is_refused_and_nothing_replaced(
    tmp_path, monkeypatch
):
    model, config = small()
    out = tmp_path / "engine"
    compile_engine(model, config, out, backend="torch", precision="fp32", max_batch=8)
    before = read_manifest(out)
    monkeypatch.setitem(ACCURACY_BOUNDS, "fp32", 0.0)  # ONNX Runtime differs by ~1e-7
    with pytest.raises(AccuracyError, match="differs from eager fp32 by .* beyond fp32's bound 0"):
        compile_engine(
            model, config, out, backend="onnxruntime", precision="fp32", max_batch=8, verify=True
        )
    assert read_manifest(out).backend == before.backend == "torch"  # the old one is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine"]


def test_choose_keeps_the_higher_precision_unless_clearly_faster():
    fp32 = {"backend": "onnxruntime", "precision": "fp32", "ms_per_frame": 1.00}
    int8 = {"backend": "onnxruntime", "precision": "int8", "ms_per_frame": 0.95}
    bf16 = {"backend": "openvino", "precision": "bf16", "ms_per_frame": 0.60}
    slow = {"backend": "torch", "precision": "fp32", "ms_per_frame": 2.0}
    assert choose([fp32, int8, slow]) is fp32  # 5 % is within timing noise
    assert choose([fp32, int8, bf16, slow]) is bf16  # 37 % faster than the best fp32
    assert choose([{**int8, "ms_per_frame": 0.5}, fp32])["precision"] == "int8"
    assert choose([slow]) is slow


def test_auto_measures_every_candidate_and_records_the_choice(tmp_path):
    model, config = small()
    out = tmp_path / "auto"
    candidates = (("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "bf16"))
    lines = []
    manifest = compile_auto(
        model, config, out, max_batch=8, calibration=None, candidates=candidates,
        min_seconds=0.05, say=lines.append,
    )  # fmt: skip
    auto = manifest.notes["auto"]
    rows = auto["candidates"]
    assert [(r["backend"], r["precision"]) for r in rows] == list(candidates)
    assert "offers precision" in rows[2]["skipped"]
    timed = [r for r in rows if "ms_per_frame" in r]
    assert len(timed) == 2 and all(r["ms_per_frame"] > 0 for r in timed)
    best = choose(timed)
    assert auto["chosen"] == f"{best['backend']} {best['precision']}"
    assert (manifest.backend, manifest.precision) == (best["backend"], best["precision"])
    assert "ms of model time per frame" in auto["why"] and "cpu_features" in auto
    assert read_manifest(out).notes["auto"] == auto
    loaded, _ = load_engine(out)
    assert loaded.name == best["backend"]
    assert len(lines) == 3 and "skipped" in lines[2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auto"]  # no candidate left behind


def test_eval_refuses_an_engine_directory_of_other_weights(tmp_path):
    model, config = small()
    out = tmp_path / "engine"
    compile_engine(model, config, out, backend="onnxruntime", precision="fp32", max_batch=8)
    app = load_config(None, ["model.backbone.image_size=32", f"engine.engine_dir={out}"])
    other = build_model(config)
    for p in other.parameters():
        p.data.add_(1.0)
    with pytest.raises(EngineError, match="compiled from other weights"):
        replay_backend(other, app)
    assert replay_backend(model, app).name == "onnxruntime"


def test_openvino_gives_the_same_events_as_onnxruntime_fp32(tmp_path):
    """The bundled model on a generated video, replayed through the detector on each."""
    scene = SyntheticScene(seed=20261203, width=64, height=64, num_actors=2, duration_s=30.0)
    video = tmp_path / "v.mp4"
    write_video(video, scene, duration_s=30.0, fps=10)
    config = load_config(ROOT / "configs" / "demo.yaml", ["engine.max_batch=1"])
    model, model_config, _ = load_checkpoint(ROOT / config.weights, "cpu")
    events = {}
    for backend in ("onnxruntime", "openvino"):
        out = tmp_path / backend
        compile_engine(model, model_config, out, backend=backend, precision="fp32", max_batch=8)
        events[backend] = replay(model, str(video), config, backend=load_engine(out)[0])
    ort, ov = events["onnxruntime"], events["openvino"]
    assert len(ort) >= 4, "the bundled model should publish actions on this scene"
    assert [(e.type, e.event_id, e.label) for e in ov] == [
        (e.type, e.event_id, e.label) for e in ort
    ]
    for a, b in zip(ort, ov, strict=True):
        assert abs(a.start_s - b.start_s) <= 0.1 + 1e-6 and abs(a.frame_s - b.frame_s) <= 0.1 + 1e-6
        if a.end_s is not None:
            assert abs(a.end_s - b.end_s) <= 0.1 + 1e-6
        assert abs(a.score - b.score) <= 1e-2


def test_compile_command_calibrates_int8_on_the_videos_given(tmp_path):
    needs_units("int8")
    model, config = small()
    path = tmp_path / "small.pt"
    save_checkpoint(path, model, config, step=1)  # records no training videos
    scene = SyntheticScene(seed=5, width=64, height=64, num_actors=1, duration_s=4.0)
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", scene, duration_s=4.0, fps=10)
    out = tmp_path / "engine"
    args = ["compile", str(path), "--backend", "onnxruntime", "--precision", "int8"]
    missing = run_cli(*args, "--out", str(out), timeout=120)
    assert missing.returncode != 0 and not out.exists()
    assert "precision int8 needs frames to calibrate on: give --calibration" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad = run_cli(*args, "--calibration", str(tmp_path / "none"), "--out", str(out), timeout=120)
    assert bad.returncode != 0 and "no such video file or folder (--calibration)" in bad.stderr
    result = run_cli(*args, "--calibration", str(videos), "--out", str(out), timeout=180)
    assert result.returncode == 0, result.stderr
    assert "max relative backbone" in result.stderr
    manifest = read_manifest(out)
    assert manifest.precision == "int8" and manifest.notes["calibration_frames"] == 20
