"""GPU backends (marker `gpu`: skipped without a CUDA GPU). Run on a GPU host with
`ACTSTREAM_REQUIRE_TENSORRT=1 python -m pytest -m gpu -v` (README, "TensorRT on a GPU host"):
with that variable a missing or broken TensorRT fails the TensorRT tests instead of skipping
them, so the run cannot pass with TensorRT untested."""

import os

import numpy as np
import pytest
import torch

from engine.backends.base import BackendError
from engine.backends.choice import backend_problem
from engine.backends.compile import compile_engine, load_engine
from engine.backends.onnxruntime_backend import OnnxRuntimeBackend
from engine.backends.torch_backend import TorchBackend
from engine.backends.verify import compare_backends, max_relative_error
from models.action_model import ModelConfig, build_model
from models.faformer import FAFormerConfig

pytestmark = pytest.mark.gpu
CONFIG = ModelConfig()
FAFORMER = ModelConfig(head=FAFormerConfig())
TRT_MAX_BATCH = 16


def model(config: ModelConfig = CONFIG):
    torch.manual_seed(0)
    return build_model(config).eval()


def test_cuda_fp16_matches_fp32_eager_within_1e2_relative():
    reference = TorchBackend(model(), "cpu")
    fp16 = TorchBackend(model(), "cuda", precision="fp16", cuda_graphs=False)
    errors = max_relative_error(reference, fp16, CONFIG, batch=4, seed=1)
    assert max(errors.values()) <= 1e-2, errors


def test_cuda_graphs_match_eager_for_every_batch_size():
    eager = TorchBackend(model(), "cuda", cuda_graphs=False)
    graphed = TorchBackend(model(), "cuda", cuda_graphs=True, max_batch=8)
    for batch in (1, 3, 8):  # 3 is padded to the captured batch of 4
        diffs = compare_backends(eager, graphed, CONFIG, batch=batch, seed=batch)
        assert max(diffs.values()) < 1e-4, (batch, diffs)
    assert len(graphed.graphs["backbone"].graphs) == 3  # batches 1, 4, 8


def test_torch_compile_matches_eager_on_cuda():
    eager = TorchBackend(model(), "cuda", cuda_graphs=False)
    compiled = TorchBackend(model(), "cuda", compile=True, cuda_graphs=False)
    diffs = compare_backends(eager, compiled, CONFIG, batch=2, seed=3)
    assert max(diffs.values()) < 1e-3, diffs


def test_onnxruntime_cuda_matches_eager(tmp_path):
    problem = backend_problem("onnxruntime", "cuda")
    if problem:
        pytest.skip(problem)
    m = model()
    compile_engine(
        m,
        CONFIG,
        tmp_path / "e",
        backend="onnxruntime",
        precision="fp32",
        max_batch=8,
        device="cuda",
    )
    ort = OnnxRuntimeBackend(tmp_path / "e", CONFIG, device="cuda")
    diffs = compare_backends(TorchBackend(model(), "cpu"), ort, CONFIG, batch=4, seed=4)
    assert max(diffs.values()) < 1e-3, diffs


def require_tensorrt() -> None:
    problem = backend_problem("tensorrt", "cuda")
    if problem and os.environ.get("ACTSTREAM_REQUIRE_TENSORRT") == "1":
        pytest.fail(f"ACTSTREAM_REQUIRE_TENSORRT=1 but {problem}")
    if problem:
        pytest.skip(problem)


@pytest.fixture(
    scope="module",
    params=[("default", False), ("default", True), ("faformer", False)],
    ids=["exported-program", "standalone", "faformer"],
)
def trt_engine(request, tmp_path_factory):
    """(engine directory, model config, standalone?): a TensorRT fp16 engine (batch
    1..TRT_MAX_BATCH) of the default model, with and without a standalone backbone engine,
    and of a FAFormer head."""
    require_tensorrt()
    name, standalone = request.param
    config = FAFORMER if name == "faformer" else CONFIG
    out = tmp_path_factory.mktemp("trt") / "engine"
    compile_engine(
        model(config),
        config,
        out,
        backend="tensorrt",
        precision="fp16",
        max_batch=TRT_MAX_BATCH,
        device="cuda",
        standalone_engine=standalone,
    )
    return out, config, standalone


def test_tensorrt_runs_the_graphs_in_tensorrt_engines(trt_engine):
    """A graph that fell back to PyTorch would pass the accuracy tests: each compiled graph
    must hold TensorRT engine calls, and the standalone engine must be the one in use."""
    out, _, standalone = trt_engine
    trt, _ = load_engine(out, device="cuda")
    for name, graph in trt.graphs.items():
        targets = [str(n.target) for n in graph.graph.nodes if n.op == "call_function"]
        assert any("execute_engine" in t for t in targets), (name, targets)
    assert (trt.standalone is not None) == standalone
    assert ("standalone TensorRT engine" in trt.describe()) == standalone


@pytest.mark.parametrize("batch", [1, 3, 4, TRT_MAX_BATCH])
def test_tensorrt_fp16_engine_matches_fp32_eager(trt_engine, batch):
    out, config, _ = trt_engine
    trt, manifest = load_engine(out, device="cuda")
    assert manifest.backend == "tensorrt" and "tensorrt" in manifest.versions
    reference = TorchBackend(model(config), "cpu")
    errors = max_relative_error(reference, trt, config, batch=batch, seed=5)
    assert max(errors.values()) <= 1e-2, (batch, errors)


def test_tensorrt_refuses_a_batch_beyond_its_profile_with_one_clear_error(trt_engine):
    out, config, _ = trt_engine
    trt, _ = load_engine(out, device="cuda")
    size = config.backbone.image_size
    frames = np.zeros((TRT_MAX_BATCH + 1, size, size, 3), np.uint8)
    with pytest.raises(BackendError, match=f"--max-batch {TRT_MAX_BATCH}"):
        trt.encode_frames(frames, frames)
    if trt.standalone is not None:  # the engine's own check names the profile's range
        x = torch.zeros(TRT_MAX_BATCH + 1, 3, size, size, device="cuda", dtype=torch.half)
        with pytest.raises(BackendError, match="outside the engine's profile"):
            trt.standalone(x, x)


def test_tensorrt_first_window_of_a_stream_matches_eager(trt_engine):
    """A stream's first window is all padding but one frame: fully masked attention rows
    must give the eager model's values in the fp16 engine, not NaN or noise."""
    out, config, _ = trt_engine
    trt, _ = load_engine(out, device="cuda")
    eager = TorchBackend(model(config), "cpu")
    T = config.head.window_frames
    valid = torch.zeros(1, T, dtype=torch.bool)
    valid[0, -1] = True
    window = torch.randn(1, T, config.temporal.dim, generator=torch.Generator().manual_seed(1))
    got, want = trt.head(window, valid), eager.head(window, valid)
    for field in ("cls_logits", "offsets", "frame_logits"):
        g, w = getattr(got, field, None), getattr(want, field, None)
        if w is None:
            continue
        assert g.isfinite().all()
        scale = w.abs().max().clamp(min=1e-6)
        assert float((g - w).abs().max() / scale) <= 1e-2, field
    x = torch.randn(1, config.backbone.feature_dim, generator=torch.Generator().manual_seed(2))
    y, _ = trt.temporal_step(x, trt.init_cache(1))
    y_eager, _ = eager.temporal_step(x, eager.init_cache(1))
    assert float((y - y_eager).abs().max() / y_eager.abs().max()) <= 1e-2
