"""Export of the three runtime graphs: torch.export with a dynamic batch, ONNX files that pass
the checker, ONNX Runtime equal to eager PyTorch, and only operators TensorRT's ONNX parser
supports (the list kept in engine/backends/tensorrt_onnx_ops.json)."""

import functools
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from engine.backends.cache import cache_root, prepare_backend
from engine.backends.graphs import (
    GRAPHS,
    ONNX_OPSET,
    example_inputs,
    export_onnx,
    export_program,
    graph_io,
    graph_module,
)
from engine.backends.manifest import weights_sha256
from engine.backends.onnxruntime_backend import OnnxRuntimeBackend
from engine.backends.torch_backend import TorchBackend
from engine.backends.verify import compare_backends
from engine.checkpoint import load_checkpoint
from models.action_model import ModelConfig, build_model
from models.actionformer import HeadConfig
from models.faformer import FAFormerConfig
from models.fastback import TemporalConfig
from models.signal import SignalInput

pytestmark = pytest.mark.slow

TRT_OPS = json.loads(
    (Path(__file__).parents[2] / "engine" / "backends" / "tensorrt_onnx_ops.json").read_text()
)

# The default (bundled model) shape, and one with lookahead heads, which add graph branches.
CONFIGS = {
    "default": ModelConfig(),
    "lookahead": ModelConfig(
        temporal=TemporalConfig(
            dim=64,
            num_lookback_heads=2,
            num_lookahead_heads=2,
            lookahead_frames=2,
            lookback_frames=8,
        ),
        head=HeadConfig(window_frames=32, dim=64, num_levels=3, num_heads=2),
    ),
    # the FAFormer head: frame branch, action tokens, segment-level (U) blocks, labels
    # decided by the tokens (FACT's blend)
    "faformer": ModelConfig(
        temporal=TemporalConfig(dim=64, num_lookback_heads=4, lookback_frames=8),
        head=FAFormerConfig(window_frames=32, dim=32, num_tokens=4, num_heads=2, decide="tokens"),
    ),
    # a signal model: the first-order-difference front end instead of the image backbone
    "signal": ModelConfig(
        classes=("run", "walk", "jump"),
        input=SignalInput(channels=30, sample_rate_hz=100.0, window_samples=50, hop_samples=10),
        temporal=TemporalConfig(dim=64, num_lookback_heads=2, lookback_frames=8),
        head=HeadConfig(window_frames=32, dim=64, num_levels=3, num_heads=2),
    ),
}


BUNDLED = Path(__file__).parents[2] / "configs" / "weights" / "demo.pt"


@functools.cache
def export_once(name: str, root: Path):
    """One export per shape in a session, however the tests are ordered or distributed (a
    parametrized module fixture is set up again whenever its parameter changes). The default
    shape is the bundled model's: its graphs come from the session's engine cache, as
    `actstream run` exports them (so the export is paid once for every test that runs it)."""
    if name == "default":
        model, config, _ = load_checkpoint(str(BUNDLED))
        assert config == CONFIGS["default"], "the bundled model has the default shape"
        prepare_backend(model, config, backend="onnxruntime", max_batch=32)
        digest = weights_sha256(model.state_dict())[:20]
        out = cache_root() / f"onnxruntime-fp32-b32-{digest}"
        return config, model.eval(), {g: out / f"{g}.onnx" for g in GRAPHS}, out
    config = CONFIGS[name]
    model = build_model(config).eval()
    out = root / f"onnx-{name}"
    return config, model, export_onnx(model, out, config, max_batch=8), out


@pytest.fixture(params=sorted(CONFIGS))
def exported(request, tmp_path_factory):
    return export_once(request.param, tmp_path_factory.getbasetemp())


@pytest.mark.parametrize("name", GRAPHS)
def test_torch_export_with_a_dynamic_batch_matches_eager(name):
    config = CONFIGS["default"]
    model = build_model(config).eval()
    program = export_program(model, name, config, "fp32", max_batch=16)
    specs = graph_io(config, "fp32")[name]["inputs"]
    for batch in (1, 5, 16):
        args = example_inputs(specs, batch, seed=batch)
        with torch.no_grad():
            want = graph_module(model, name)(*args)
            got = program.module()(*args)
        want = want if isinstance(want, tuple) else (want,)
        got = got if isinstance(got, tuple) else (got,)
        assert got[0].shape[specs[0].batch_axis] == batch
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_onnx_files_pass_the_checker_with_a_dynamic_batch(exported):
    _, _, paths, _ = exported
    assert set(paths) == set(GRAPHS)
    for path in paths.values():
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path))
        first = model.graph.input[0].type.tensor_type.shape.dim[0]
        assert first.dim_param and not first.dim_value, f"{path.name}: batch axis is not dynamic"


def test_onnxruntime_matches_eager_within_1e4_on_fresh_random_inputs(exported):
    config, model, _, out = exported
    seed = int.from_bytes(os.urandom(4), "little")
    ort = OnnxRuntimeBackend(out, config)
    diffs = compare_backends(TorchBackend(model), ort, config, batch=3, seed=seed)
    assert max(diffs.values()) < 1e-4, (seed, diffs)


def test_exported_graphs_use_only_operators_tensorrts_onnx_parser_supports(exported):
    supported = set(TRT_OPS["supported"])
    allowed_types = {getattr(onnx.TensorProto, t) for t in TRT_OPS["tensor_types"]}
    for name, path in exported[2].items():
        model = onnx.load(str(path))
        opsets = {o.domain: o.version for o in model.opset_import}
        assert opsets.get("", opsets.get("ai.onnx")) == ONNX_OPSET
        assert 17 <= ONNX_OPSET <= TRT_OPS["opset_max"]
        assert not model.functions, f"{name}: local functions are not parsed by TensorRT"
        for node in model.graph.node:
            assert node.domain in ("", "ai.onnx"), (
                f"{name}: custom op {node.domain}::{node.op_type}"
            )
            assert node.op_type in supported, (
                f"{name}: {node.op_type} is not supported by TensorRT {TRT_OPS['tensorrt_version']}"
            )
            rule = TRT_OPS["restrictions"].get(node.op_type, {})
            if "spatial_dims" in rule:
                kernel = next(a for a in node.attribute if a.name == "kernel_shape").ints
                assert len(kernel) in rule["spatial_dims"], f"{name}: {node.op_type} {list(kernel)}"
            if "outputs" in rule:
                used = [o for o in node.output if o]
                assert len(used) <= rule["outputs"], f"{name}: {node.op_type} outputs {used}"
        typed = [*model.graph.input, *model.graph.output, *model.graph.value_info]
        for value in typed:
            elem = value.type.tensor_type.elem_type
            assert elem in allowed_types, f"{name}: {value.name} has type {elem}"
        for init in model.graph.initializer:
            assert init.data_type in allowed_types, f"{name}: initializer {init.name}"


def test_the_operator_list_is_the_documented_one():
    assert TRT_OPS["tensorrt_version"] and TRT_OPS["source"]
    assert not set(TRT_OPS["supported"]) & set(TRT_OPS["unsupported"])
    for op in ("Conv", "MatMul", "Softmax", "LayerNormalization", "Where", "Gemm", "MaxPool"):
        assert op in TRT_OPS["supported"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_fully_masked_attention_rows_stay_finite(dtype):
    """A young stream's window is mostly padding, and lookahead layers' first steps see no
    valid key at all: no NaN may come out, in fp32 or fp16 (what TensorRT fp16 runs)."""
    config = CONFIGS["lookahead"]
    model = build_model(config).to(dtype).eval()
    T = config.head.window_frames
    with torch.no_grad():
        out = model.head(torch.randn(2, T, 64, dtype=dtype), torch.zeros(2, T, dtype=torch.bool))
        assert out.cls_logits.isfinite().all() and out.offsets.isfinite().all()
        c = config.backbone.feature_dim
        cache = model.temporal.init_cache(2)
        for _ in range(3):  # layer 2 has no valid input until delay_frames have passed
            y, cache = model.temporal.step(torch.randn(2, c, dtype=dtype), cache)
            assert y.isfinite().all()
        x = torch.randn(1, 6, c, dtype=dtype)
        feats = model.temporal(x, torch.zeros(1, 6, dtype=torch.bool))
        assert feats.isfinite().all()
    assert np.isfinite(out.cls_logits.float().numpy()).all()


def test_one_temporal_step_over_stacked_streams_equals_a_step_per_stream(exported):
    """The detector advances every stream with a new frame in one call (`stack_caches`);
    streams at different counts (one still warming up) give what a call each gives."""
    from models.fastback import split_cache, stack_caches

    config, model, _, out = exported
    torch.manual_seed(5)
    for backend in (TorchBackend(model), OnnxRuntimeBackend(out, config)):
        dim = config.feature_dim
        caches = []
        for warm in (0, 3, 11):  # frames each stream has seen already
            cache = backend.init_cache(1)
            for _ in range(warm):
                _, cache = backend.temporal_step(torch.randn(1, dim), cache)
            caches.append(cache)
        x = torch.randn(3, dim)
        y, stacked = backend.temporal_step(x, stack_caches(caches))
        for b, (cache, got) in enumerate(zip(caches, split_cache(stacked), strict=True)):
            want_y, want = backend.temporal_step(x[b : b + 1], cache)
            assert torch.allclose(y[b : b + 1], want_y, atol=1e-5)
            for a, w in zip(got[:4], want[:4], strict=True):
                assert torch.allclose(a, w, atol=1e-5)
            assert got.count.tolist() == want.count.tolist()
