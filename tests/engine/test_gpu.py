"""GPU backends (marker `gpu`: skipped without a CUDA GPU). Run on a GPU host with
`python -m pytest -m gpu -v`; results are recorded in the README ("GPU results")."""

import pytest
import torch

from engine.backends.choice import backend_problem
from engine.backends.compile import compile_engine, load_engine
from engine.backends.onnxruntime_backend import OnnxRuntimeBackend
from engine.backends.torch_backend import TorchBackend
from engine.backends.verify import compare_backends, max_relative_error
from models.action_model import ModelConfig, build_model

pytestmark = pytest.mark.gpu
CONFIG = ModelConfig()


def model():
    return build_model(CONFIG).eval()


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


@pytest.fixture(scope="module", params=[False, True], ids=["exported-program", "standalone"])
def trt_engine(request, tmp_path_factory):
    """A TensorRT fp16 engine directory of the default model (backbone batch 1..16)."""
    problem = backend_problem("tensorrt", "cuda")
    if problem:
        pytest.skip(problem)
    out = tmp_path_factory.mktemp("trt") / "engine"
    compile_engine(
        model(),
        CONFIG,
        out,
        backend="tensorrt",
        precision="fp16",
        max_batch=16,
        device="cuda",
        standalone_engine=request.param,
    )
    return out


def test_tensorrt_fp16_engine_matches_fp32_eager(trt_engine):
    trt, manifest = load_engine(trt_engine, device="cuda")
    assert manifest.backend == "tensorrt" and "tensorrt" in manifest.versions
    errors = max_relative_error(TorchBackend(model(), "cpu"), trt, CONFIG, batch=4, seed=5)
    assert max(errors.values()) <= 1e-2, errors


def test_tensorrt_first_window_of_a_stream_is_finite(trt_engine):
    """A stream's first window is all padding but one frame: fully masked attention rows
    must not turn into NaN in the fp16 engine."""
    trt, _ = load_engine(trt_engine, device="cuda")
    T = CONFIG.head.window_frames
    valid = torch.zeros(1, T, dtype=torch.bool)
    valid[0, -1] = True
    out = trt.head(torch.randn(1, T, CONFIG.temporal.dim), valid)
    assert out.cls_logits.isfinite().all() and out.offsets.isfinite().all()
    y, _ = trt.temporal_step(torch.randn(1, CONFIG.backbone.feature_dim), trt.init_cache(1))
    assert y.isfinite().all()
