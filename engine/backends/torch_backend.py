"""The PyTorch backend: eager, `torch.compile`d, or CUDA graphs per batch size."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from engine.backends.base import BackendError, TorchGraphs, model_config_of
from engine.backends.choice import check_precision
from engine.backends.graphs import GRAPHS, graph_module
from models.action_model import ActionModel


class CudaGraphs:
    """Runs a module through CUDA graphs, one captured graph per input shape signature.

    Inputs are copied into the graph's static buffers, the graph is replayed and its outputs
    cloned; capture happens on the first call with a new signature (after warm-up runs on a
    side stream, as CUDA graph capture requires).
    """

    def __init__(self, module: Callable[..., object], *, warmup: int = 3) -> None:
        self.module, self.warmup = module, warmup
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, tuple, object]] = {}

    def __call__(self, *args: torch.Tensor):
        key = tuple((tuple(a.shape), a.dtype) for a in args)
        if key not in self.graphs:
            static_in = tuple(a.clone() for a in args)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(self.warmup):
                    self.module(*static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.module(*static_in)
            self.graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self.graphs[key]
        for buf, a in zip(static_in, args, strict=True):
            buf.copy_(a)
        graph.replay()
        if isinstance(static_out, tuple):
            return tuple(o.clone() for o in static_out)
        return static_out.clone()


class Bf16Autocast:
    """Runs a graph under the CPU's bf16 autocast; its floating outputs come back in float32,
    so caches and features keep one dtype whatever ran inside."""

    def __init__(self, graph: Callable) -> None:
        self.graph = graph

    def __call__(self, *args: torch.Tensor):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = self.graph(*args)
        if isinstance(out, tuple):
            return tuple(t.float() if t.is_floating_point() else t for t in out)
        return out.float()


def padded_batch(n: int, max_batch: int) -> int:
    """The captured batch size that holds n frames: the next power of two (at most max_batch)."""
    size = 1
    while size < n:
        size *= 2
    return min(size, max(max_batch, n))


class TorchBackend(TorchGraphs):
    """PyTorch on CPU or CUDA: eager by default, optionally `torch.compile`d, and on a GPU
    with CUDA graphs for fixed batch sizes (the backbone's batch is padded to a power of two
    so a handful of graphs serve every batch)."""

    name = "torch"

    def __init__(
        self,
        model: ActionModel,
        device: str = "cpu",
        *,
        precision: str = "fp32",
        compile: bool = False,
        cuda_graphs: bool | None = None,
        max_batch: int = 32,
    ) -> None:
        self.device = torch.device(device)
        check_precision(precision, device, "torch")
        self._init_facts(model_config_of(model), precision)
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.model = model.to(self.device, self.dtype).eval()
        self.max_batch = max_batch
        self.compiled = compile
        self.cuda_graphs = self.device.type == "cuda" if cuda_graphs is None else cuda_graphs
        if self.cuda_graphs and self.device.type != "cuda":
            raise BackendError("CUDA graphs need a CUDA device (engine.device cuda)")
        self.graphs = {name: graph_module(self.model, name) for name in GRAPHS}
        if compile:
            self.graphs = {k: torch.compile(g, dynamic=False) for k, g in self.graphs.items()}
        if self.cuda_graphs:
            self.graphs = {k: CudaGraphs(g) for k, g in self.graphs.items()}
        # bf16: weights stay fp32, oneDNN's bf16 kernels run under autocast, and image
        # tensors go channels-last (measured on a ResNet-18-class backbone: bf16 autocast 1.7x
        # fp32, with channels-last 3x; README "Backends").
        self.channels_last = precision == "bf16" and self.model_config.input is None
        if self.channels_last:
            self.model.backbone.to(memory_format=torch.channels_last)
        if precision == "bf16":
            self.graphs = {k: Bf16Autocast(g) for k, g in self.graphs.items()}

    def describe(self) -> str:
        opts = [
            o
            for o, on in (("torch.compile", self.compiled), ("CUDA graphs", self.cuda_graphs))
            if on
        ]
        return f"torch {self.precision} on {self.device}" + (
            f" ({', '.join(opts)})" if opts else ""
        )

    @torch.inference_mode()
    def encode_frames(self, images: np.ndarray, previous: np.ndarray) -> torch.Tensor:
        n = images.shape[0]
        if self.cuda_graphs:
            size = padded_batch(n, self.max_batch)
            if size > n:
                pad = np.repeat(images[-1:], size - n, axis=0)
                images = np.concatenate([images, pad])
                previous = np.concatenate([previous, pad])
        args = [self.frame_tensor(images, self.device, self.dtype)]
        if self.motion:
            args.append(self.frame_tensor(previous, self.device, self.dtype))
        if self.channels_last:
            args = [a.contiguous(memory_format=torch.channels_last) for a in args]
        return self.graphs["backbone"](*args)[:n].float().cpu()
