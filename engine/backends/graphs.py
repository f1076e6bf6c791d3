"""The model's three runtime graphs, as modules with tensor-only inputs and outputs, and their
export through `torch.export` (to ONNX, or on to TensorRT).

* backbone: images (B, 3, H, W) and previous frames (B, 3, H, W), float in [0, 1]
  → features (B, C_f); or, for a signal model, its front end: samples (B, W + 1, C_s) →
  features (B, C_f). B is dynamic (1 .. max_batch).
* temporal_step: one frame's features per stream plus the FastBack cache as plain tensors
  → the output and the new cache. The stream axis of the cache is dynamic.
* head: window (B, T, C) and valid (B, T) bool → ActionFormer: cls_logits (B, N, K),
  offsets (B, N, 2); FAFormer: frame_logits (B, T, K) (its token outputs serve training
  only). T is the head's `window_frames`; B is dynamic.

The point mask (which points lie on padding) is computed on the host with
`models.actionformer.point_valid`; it needs no network.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from models.action_model import ActionModel, ModelConfig
from models.fastback import FastBackCache, FastBackEncoder
from models.heads import graph_outputs, head_family
from models.signal import SignalFrontEnd

# ONNX opset of the exported graphs: ≥ 17 (LayerNormalization), within what TensorRT 10's
# parser reads (engine/tensorrt_onnx_ops.json).
ONNX_OPSET = 18
GRAPHS = ("backbone", "temporal_step", "head")


class BackboneGraph(nn.Module):
    def __init__(self, model: ActionModel) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.motion = model.backbone.config.uses_previous  # the signal front end: False

    def forward(self, images: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        return self.backbone(images, previous if self.motion else None)


class SamplesGraph(nn.Module):
    """The backbone graph of a signal model: its front end on (B, W + 1, C_s) samples."""

    def __init__(self, model: ActionModel) -> None:
        super().__init__()
        self.backbone = model.backbone

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        return self.backbone(samples)


class TemporalStepGraph(nn.Module):
    def __init__(self, model: ActionModel) -> None:
        super().__init__()
        self.temporal: FastBackEncoder = model.temporal

    def forward(
        self,
        x: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        queries: torch.Tensor,
        inputs: torch.Tensor,
        count: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        y, cache = self.temporal.step(x, FastBackCache(keys, values, queries, inputs, count))
        return (y, *cache)


class HeadGraph(nn.Module):
    def __init__(self, model: ActionModel) -> None:
        super().__init__()
        self.head = model.head

    def forward(self, window: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return graph_outputs(self.head.config, self.head(window, valid))


def wrap_head(config: ModelConfig, outputs: tuple[torch.Tensor, ...], valid: torch.Tensor):
    """The head graph's raw outputs (CPU float) as the head's output type; the masks are
    computed here, on the host."""
    return head_family(config.head).wrap(config.head, outputs, valid)


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: its name, shape (None = the dynamic batch axis) and dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @property
    def batch_axis(self) -> int:
        return self.shape.index(None)


def graph_io(config: ModelConfig, precision: str) -> dict[str, dict[str, list[TensorSpec]]]:
    """Every graph's inputs and outputs for a model config and precision: float16 tensors at
    fp16, float32 at every other precision (bf16 and int8 compute inside the graphs)."""
    f = "float16" if precision == "fp16" else "float32"
    t = config.temporal
    if config.input is not None:
        frames = [TensorSpec("samples", (None, *config.input.frame_shape), f)]
    else:
        s = config.backbone.image_size
        frames = [TensorSpec("images", (None, 3, s, s), f)]
        if config.backbone.uses_previous:
            frames.append(TensorSpec("previous", (None, 3, s, s), f))
    cache = [
        TensorSpec(name, shape, "int64" if name == "count" else f)
        for name, shape in t.cache_shapes(None).items()
    ]
    T = config.head.window_frames
    family = head_family(config.head)
    head_out = [
        TensorSpec(name, (None, *shape), f)
        for name, shape in zip(
            family.output_names, family.output_shapes(config.head, len(config.classes)), strict=True
        )
    ]
    return {
        "backbone": {
            "inputs": frames,
            "outputs": [TensorSpec("features", (None, config.feature_dim), f)],
        },
        "temporal_step": {
            "inputs": [TensorSpec("x", (None, config.feature_dim), f), *cache],
            "outputs": [
                TensorSpec("y", (None, t.dim), f),
                *(TensorSpec(f"new_{c.name}", c.shape, c.dtype) for c in cache),
            ],
        },
        "head": {
            "inputs": [
                TensorSpec("window", (None, T, t.dim), f),
                TensorSpec("valid", (None, T), "bool"),
            ],
            "outputs": head_out,
        },
    }


def graph_module(model: ActionModel, name: str) -> nn.Module:
    frames = SamplesGraph if isinstance(model.backbone, SignalFrontEnd) else BackboneGraph
    return {"backbone": frames, "temporal_step": TemporalStepGraph, "head": HeadGraph}[name](
        model
    ).eval()


_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "int64": torch.int64,
    "bool": torch.bool,
}


def example_inputs(specs: list[TensorSpec], batch: int, *, device: str = "cpu", seed: int = 0):
    """Random inputs of the given shapes, with `batch` on the dynamic axis. Valid masks are
    mostly True with a padded start; counts are small positive frame counts."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for spec in specs:
        shape = tuple(batch if dim is None else dim for dim in spec.shape)
        dtype = _DTYPES[spec.dtype]
        if dtype == torch.bool:
            x = torch.rand(shape, generator=g) < 0.9
            x[..., : shape[-1] // 8] = False  # a padded start, as in a young stream
            x[..., -1] = True
        elif dtype == torch.int64:
            x = torch.randint(1, 100, shape, generator=g)
        elif spec.name in ("images", "previous"):
            x = torch.rand(shape, generator=g)
        else:
            x = torch.randn(shape, generator=g)
        out.append(x.to(device=device, dtype=dtype))
    return tuple(out)


def example_batch_size(example_batch: int, max_batch: int) -> int:
    """The batch a graph is traced at: `example_batch` within 2 .. the batch bound (a batch
    of 1 would be specialised)."""
    return min(max(example_batch, 2), max(max_batch, 2))


def export_program(
    model: ActionModel,
    name: str,
    config: ModelConfig,
    precision: str,
    max_batch: int,
    example_batch: int = 2,
) -> torch.export.ExportedProgram:
    """`torch.export` of one graph with a dynamic batch axis (1 .. max_batch), traced at
    `example_batch` (at least 2: a batch of 1 would be specialised; torch-tensorrt takes its
    optimisation profile's optimum from it)."""
    io = graph_io(config, precision)[name]
    module = graph_module(model, name)
    batch = torch.export.Dim("batch", min=1, max=max(max_batch, 2))
    dynamic = {spec.name: {spec.batch_axis: batch} for spec in io["inputs"]}
    device = next(model.parameters()).device
    args = example_inputs(
        io["inputs"], example_batch_size(example_batch, max_batch), device=str(device)
    )
    with torch.no_grad():
        return torch.export.export(module, args, dynamic_shapes=dynamic, strict=False)


def export_onnx(
    model: ActionModel,
    out_dir: str | Path,
    config: ModelConfig,
    *,
    precision: str = "fp32",
    max_batch: int = 32,
    names: tuple[str, ...] = GRAPHS,
) -> dict[str, Path]:
    """Writes `<graph>.onnx` for every graph (or those `names`); returns their paths. `model`
    must already be in the precision's dtype."""
    import onnx

    # The exporter logs a warning per optional torchvision op it cannot find; not ours.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    io_all = graph_io(config, precision)
    paths = {}
    for name in names:
        io = io_all[name]
        program = export_program(model, name, config, precision, max_batch)
        path = out_dir / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx_program = torch.onnx.export(
                program,
                input_names=[s.name for s in io["inputs"]],
                output_names=[s.name for s in io["outputs"]],
                opset_version=ONNX_OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        onnx_program.optimize()
        onnx_program.save(str(path), external_data=False)
        onnx.checker.check_model(str(path), full_check=True)
        paths[name] = path
    return paths
