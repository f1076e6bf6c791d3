"""Engine directories: compile → manifest → load round trip, refusal of directories that do
not match, backend selection with clear errors, `actstream compile` / `run --engine`, and the
same events from the torch and onnxruntime backends."""

import copy
import dataclasses
import json
import logging
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.backends.base import BackendError
from engine.backends.cache import prepare_backend
from engine.backends.choice import choose_backend
from engine.backends.compile import _export_key, _remembered, compile_engine, load_engine
from engine.backends.graphs import export_onnx
from engine.backends.manifest import EngineError, file_sha256, read_manifest, weights_sha256
from engine.backends.torch_backend import TorchBackend
from engine.backends.verify import compare_backends
from engine.build import build_detector
from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.cli.run import load_backend
from engine.config import load_config
from models.action_model import build_model
from stream.sources import parse_sources
from tests.conftest import run_cli as conftest_run_cli
from tests.conftest import scaled
from tests.integration.helpers import small_model
from training.synth import write_synthetic_dataset

ROOT = Path(__file__).resolve().parents[2]


def small(image_size: int = 32):
    config = load_config(None, [*small_model(), f"model.backbone.image_size={image_size}"]).model
    return build_model(config).eval(), config


@pytest.fixture(scope="session")  # once, however the tests are ordered or distributed
def checkpoint(tmp_path_factory):
    model, config = small()
    path = tmp_path_factory.mktemp("ckpt") / "small.pt"
    save_checkpoint(path, model, config, step=7)
    return path, model, config


@pytest.fixture(scope="session")
def engines(tmp_path_factory, checkpoint):
    _, model, config = checkpoint
    root = tmp_path_factory.mktemp("engines")
    for backend in ("torch", "onnxruntime"):
        compile_engine(
            model, config, root / backend, backend=backend, precision="fp32", max_batch=8
        )
    return root


def copy_engine(engines: Path, backend: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(engines / backend, tmp_path / backend))


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_engine_directory_round_trip(engines, checkpoint, backend):
    _, model, config = checkpoint
    loaded, manifest = load_engine(engines / backend)
    raw = json.loads((engines / backend / "manifest.json").read_text())
    assert raw["backend"] == backend and raw["precision"] == "fp32" and raw["max_batch"] == 8
    assert raw["classes"] == list(config.classes)
    assert raw["model_config"]["backbone"]["image_size"] == 32
    assert raw["io"]["backbone"]["inputs"][0] == {
        "name": "images",
        "shape": [None, 3, 32, 32],
        "dtype": "float32",
    }
    assert raw["weights_sha256"] == weights_sha256(model.state_dict())
    assert "torch" in raw["versions"] and (
        backend != "onnxruntime" or "onnxruntime" in raw["versions"]
    )
    assert set(raw["files"]) == set(manifest.files) and all(
        len(h) == 64 for h in raw["files"].values()
    )
    assert loaded.name == backend and manifest.model == config
    tolerance = 0.0 if backend == "torch" else 1e-4
    diffs = compare_backends(TorchBackend(model), loaded, config, batch=3, seed=11)
    assert max(diffs.values()) <= tolerance, diffs


def test_altered_artifact_is_refused_by_its_checksum(engines, tmp_path):
    d = copy_engine(engines, "onnxruntime", tmp_path)
    blob = bytearray((d / "head.onnx").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (d / "head.onnx").write_bytes(bytes(blob))
    with pytest.raises(EngineError, match=r"head.onnx: checksum mismatch"):
        load_engine(d)


def test_missing_artifact_and_missing_or_corrupt_manifest_are_refused(engines, tmp_path):
    d = copy_engine(engines, "torch", tmp_path)
    (d / "model.pt").unlink()
    with pytest.raises(EngineError, match="artifact model.pt is missing"):
        load_engine(d)
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(EngineError, match="corrupt manifest"):
        load_engine(d)
    (d / "manifest.json").unlink()
    with pytest.raises(EngineError, match="not an engine directory"):
        load_engine(d)
    with pytest.raises(EngineError, match="no such engine directory"):
        load_engine(tmp_path / "nowhere")


def edit_manifest(d: Path, edit) -> None:
    raw = json.loads((d / "manifest.json").read_text())
    edit(raw)
    (d / "manifest.json").write_text(json.dumps(raw))


def test_unknown_backend_is_refused(engines, tmp_path):
    d = copy_engine(engines, "torch", tmp_path)
    edit_manifest(d, lambda m: m.update(backend="coreml"))
    with pytest.raises(EngineError, match="unknown backend 'coreml'"):
        load_engine(d)


def test_shapes_that_disagree_with_the_model_config_are_refused(engines, tmp_path):
    d = copy_engine(engines, "onnxruntime", tmp_path)
    edit_manifest(d, lambda m: m["io"]["backbone"]["inputs"][0].update(shape=[None, 3, 64, 64]))
    with pytest.raises(EngineError, match="shapes of graph 'backbone' disagree"):
        load_engine(d)


def test_graph_of_another_model_shape_is_refused_even_with_a_matching_checksum(engines, tmp_path):
    """A backbone.onnx compiled for 48x48 frames dropped into a 32x32 engine directory, its
    checksum updated: the session's own input shapes give it away."""
    other_model, other_config = small(image_size=48)
    [other] = export_onnx(
        other_model, tmp_path / "other", other_config, max_batch=8, names=("backbone",)
    ).values()
    d = copy_engine(engines, "onnxruntime", tmp_path)
    shutil.copy(other, d / "backbone.onnx")
    edit_manifest(d, lambda m: m["files"].update({"backbone.onnx": file_sha256(other)}))
    with pytest.raises(BackendError, match=r"backbone.onnx: graph inputs .* do not match"):
        load_engine(d)


def test_explicit_backend_that_is_unavailable_says_what_is_missing():
    if torch.cuda.is_available():
        pytest.skip("this host has a GPU: the CPU-only message does not apply")
    with pytest.raises(
        BackendError, match="backend tensorrt is unavailable: TensorRT needs a CUDA"
    ):
        choose_backend("tensorrt", "cpu")
    with pytest.raises(BackendError, match="torch sees no CUDA GPU"):
        choose_backend("torch", "cuda")
    assert choose_backend("auto", "cpu") == "onnxruntime"  # measured faster on the CPU


def test_weights_compile_once_into_the_cache(checkpoint, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ACTSTREAM_CACHE_DIR", str(tmp_path))
    _, model, config = checkpoint
    got: list = []

    def start():
        got.append(prepare_backend(model, config, backend="onnxruntime"))

    # two starts at once: one compiles, the other waits for it and loads the entry
    starts = [threading.Thread(target=start) for _ in range(2)]
    with caplog.at_level(logging.INFO, logger="engine.backends.cache"):
        for t in starts:
            t.start()
        for t in starts:
            t.join(scaled(120))
    assert [b.name for b in got] == ["onnxruntime", "onnxruntime"]
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("compiling the weights") for m in messages) == 1, messages
    assert sum(m.startswith("using the cached") for m in messages) == 1, messages
    [entry] = list((tmp_path / "engines").iterdir())
    stamp = (entry / "manifest.json").stat().st_mtime_ns
    second = prepare_backend(model, config, backend="onnxruntime")
    assert (entry / "manifest.json").stat().st_mtime_ns == stamp  # reused, not recompiled
    assert second.name == "onnxruntime"
    (entry / "head.onnx").write_bytes(b"corrupt")  # a damaged cache entry is rebuilt...
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="engine.backends.compile"):
        third = prepare_backend(model, config, backend="onnxruntime")
    assert read_manifest(entry).files and third.name == "onnxruntime"
    # ...from the exported graphs the first compile kept, not by exporting again
    assert any(r.getMessage().startswith("using the exported graphs") for r in caplog.records)
    [memo] = list((tmp_path / "onnx").iterdir())
    names = sorted(p.name for p in memo.glob("*.onnx"))
    assert _remembered(memo, names)
    (memo / names[0]).write_bytes(b"corrupt")  # a damaged kept file is not used
    assert not _remembered(memo, names)


def test_the_export_cache_key_covers_what_shapes_the_graphs(checkpoint):
    _, model, config = checkpoint
    key = _export_key(model, config, "fp32", 8)
    assert key == _export_key(copy.deepcopy(model), config, "fp32", 8)
    assert key != _export_key(model, config, "fp32", 4)
    assert key != _export_key(model, config, "fp16", 8)
    assert key != _export_key(model, dataclasses.replace(config, fps=config.fps + 1), "fp32", 8)
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    assert key != _export_key(other, config, "fp32", 8)


@pytest.mark.parametrize("asked, used", [(32, 8), (4, 4)])
def test_run_with_an_engine_never_batches_beyond_its_max_batch(engines, asked, used):
    config = load_config(
        None, [f"engine.engine_dir={engines / 'onnxruntime'}", f"engine.max_batch={asked}"]
    )
    config, backend = load_backend(config)
    assert config.engine.max_batch == used and read_manifest(engines / "onnxruntime").max_batch == 8
    backend.encode_frames(*[np.zeros((used, 32, 32, 3), np.uint8)] * 2)  # within the profile


def run_cli(*args, timeout=120):
    return conftest_run_cli(*args, timeout=timeout)


def test_compile_and_run_commands(checkpoint, tmp_path):
    path, _, _ = checkpoint
    out = tmp_path / "engine"
    result = run_cli(
        "compile", str(path), "--backend", "onnxruntime", "--max-batch", "8", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert "max |compiled - eager|" in result.stderr
    assert read_manifest(out).max_batch == 8
    result = run_cli(
        "run",
        "synthetic://a",
        "--engine",
        str(out),
        "--duration-s",
        "1.5",
        "--no-metrics",
        "--zmq",
        "tcp://127.0.0.1:*",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert "backend: onnxruntime fp32 on cpu" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--backend", "tensorrt"],
            "backend tensorrt is unavailable: TensorRT needs a CUDA device",
        ),
        (
            ["--engine", "ENGINE", "--backend", "torch"],
            "compiled for backend onnxruntime, but backend torch",
        ),
        (["--engine", "ENGINE", "--weights", "CKPT"], "give --engine or --weights, not both"),
        (["--engine", "MISSING"], "no such engine directory"),
        (["--precision", "fp16"], "fp16"),
    ],
)
def test_run_start_up_mistakes_give_one_line(engines, checkpoint, tmp_path, args, message):
    if torch.cuda.is_available():
        pytest.skip("the CPU-only messages do not apply on a GPU host")
    swap = {
        "ENGINE": str(engines / "onnxruntime"),
        "CKPT": str(checkpoint[0]),
        "MISSING": str(tmp_path / "x"),
    }
    result = run_cli("run", "synthetic://a", "--no-metrics", *(swap.get(a, a) for a in args))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("actstream: error: ") and message in lines[0], (
        lines
    )


def test_compile_refuses_what_cannot_be_built(checkpoint, tmp_path):
    path, _, _ = checkpoint
    for args, message in [
        (["--backend", "onnxruntime", "--precision", "fp16"], "fp16 needs a CUDA device"),
        (["--backend", "tensorrt"], "backend tensorrt is unavailable"),
        # what is installed against what the TensorRT path needs, on the same line
        (["--backend", "tensorrt"], f"; versions: torch {torch.__version__}"),
        (["--backend", "torch", "--standalone-engine"], "applies to the tensorrt backend only"),
        (["--max-batch", "0"], "--max-batch must be >= 1"),
    ]:
        if torch.cuda.is_available() and "tensorrt" in args:
            continue
        result = run_cli("compile", str(path), "--out", str(tmp_path / "e"), *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
    result = run_cli("compile", str(tmp_path / "none.pt"), "--out", str(tmp_path / "e"))
    assert result.returncode == 2 and "no such checkpoint file" in result.stderr
    assert not (tmp_path / "e").exists()  # nothing half-written


def detector_events(video: Path, backend, config) -> list[dict]:
    """Every message the detector publishes for one file, decoded as fast as possible."""
    sent: list[dict] = []
    detector = build_detector(
        parse_sources([f"v={video}"]),
        config,
        backend,
        run_id="same",
        on_sent=lambda topic, payload, message: sent.append(json.loads(payload)),
        endpoint="tcp://127.0.0.1:*",
    )
    detector.publisher.start()
    detector.start()
    detector.run(threading.Event())
    detector.close()
    return [m for m in sent if m["type"] in ("onset", "offset")]


@pytest.mark.slow
def test_torch_and_onnxruntime_give_the_same_events(tmp_path):
    """The bundled model on a synthetic video with actions, through both backends."""
    write_synthetic_dataset(tmp_path / "video", videos=1, seed=5, duration_s=30, fps=10, size=64)
    [video] = sorted((tmp_path / "video").glob("*.mp4"))
    model, model_config, _ = load_checkpoint(ROOT / "configs" / "weights" / "demo.pt")
    # compiled as `actstream run` compiles it (once per session's engine cache)
    ort = prepare_backend(model, model_config, backend="onnxruntime", max_batch=32)
    config = load_config(ROOT / "configs" / "demo.yaml", ["stream.realtime=false"])
    config = dataclasses.replace(config, model=model_config)
    a = detector_events(video, TorchBackend(model), config)
    b = detector_events(video, ort, config)
    assert len(a) >= 4, "the bundled model should see actions in this video"
    assert [(m["type"], m["event_id"], m["label"]) for m in a] == [
        (m["type"], m["event_id"], m["label"]) for m in b
    ]
    for x, y in zip(a, b, strict=True):
        for key in ("start_s", "end_s", "frame_s"):
            assert x.get(key) == y.get(key), (key, x, y)
        assert abs(x["score"] - y["score"]) <= 1e-3, (x, y)
