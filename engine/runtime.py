"""Runtime backends: the interface the detector calls, and its PyTorch and ONNX Runtime
implementations (TensorRT: engine/tensorrt_backend.py).

A backend runs the three parts of the model separately so the detector can batch frames
across streams for the backbone, step the temporal encoder per frame with an explicit cache,
and run the head on a window every S frames. Every backend offers the same methods and
takes and returns CPU torch tensors at this interface.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from engine.export import GRAPHS, graph_io, graph_module, wrap_head
from models.action_model import ActionModel, ModelConfig
from models.actionformer import HeadConfig, HeadOutput, make_points
from models.faformer import FrameLabels
from models.fastback import FastBackCache

logger = logging.getLogger(__name__)


class BackendError(RuntimeError):
    """A backend that cannot run here; the message says what is missing and how to fix it."""


class Backend(Protocol):
    name: str
    precision: str
    feature_dim: int
    delay_frames: int
    points: torch.Tensor

    def encode_frames(self, images: np.ndarray, previous: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 RGB frames and each one's previous frame (itself at a stream's
        start) → (B, C_f) features."""
        ...

    def init_cache(self, batch_size: int) -> FastBackCache: ...

    def temporal_step(
        self, x: torch.Tensor, cache: FastBackCache
    ) -> tuple[torch.Tensor, FastBackCache]:
        """(B, C_f) + cache → (B, C) + cache."""
        ...

    def head(self, window: torch.Tensor, valid: torch.Tensor) -> HeadOutput | FrameLabels:
        """(B, T, C), (B, T) bool → HeadOutput (ActionFormer) or FrameLabels (FAFormer)."""
        ...

    def describe(self) -> str:
        """One line: backend, precision, device and options."""
        ...


def frames_to_tensor(images: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(B, H, W, 3) uint8 → (B, 3, H, W) in [0, 1] on the device."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device, non_blocking=True)
    return x.permute(0, 3, 1, 2).to(dtype).div_(255.0)


def empty_cache(config: ModelConfig, batch_size: int, dtype: torch.dtype) -> FastBackCache:
    """A zero FastBack cache on the CPU, from the model config alone (no weights needed)."""
    specs = graph_io(config, "fp32")["temporal_step"]["inputs"][1:]
    tensors = [
        torch.zeros(
            tuple(batch_size if d is None else d for d in s.shape),
            dtype=torch.long if s.dtype == "int64" else dtype,
        )
        for s in specs
    ]
    return FastBackCache(*tensors)


class _ModelFacts:
    """What every backend derives from the model config."""

    def _init_facts(self, config: ModelConfig, precision: str) -> None:
        self.model_config = config
        self.precision = precision
        self.feature_dim = config.temporal.dim
        self.delay_frames = config.temporal.delay_frames
        self.motion = config.backbone.motion_input
        actionformer = isinstance(config.head, HeadConfig)
        self.strides = config.head.strides if actionformer else (1,)
        self.points = make_points(config.head.window_frames, self.strides)


class TorchGraphs(_ModelFacts):
    """A backend whose graphs are torch callables on `self.device` in `self.dtype` (the torch
    and TensorRT backends): the temporal step and the head run the same way for both."""

    graphs: dict[str, Callable]
    device: torch.device
    dtype: torch.dtype

    def init_cache(self, batch_size: int) -> FastBackCache:
        """The cache lives on the backend's device, in its precision."""
        cache = empty_cache(self.model_config, batch_size, self.dtype)
        return FastBackCache(*(t.to(self.device) for t in cache))

    @torch.inference_mode()
    def temporal_step(
        self, x: torch.Tensor, cache: FastBackCache
    ) -> tuple[torch.Tensor, FastBackCache]:
        y, *new = self.graphs["temporal_step"](x.to(self.device, self.dtype), *cache)
        return y.float().cpu(), FastBackCache(*new)

    @torch.inference_mode()
    def head(self, window: torch.Tensor, valid: torch.Tensor) -> HeadOutput | FrameLabels:
        outs = self.graphs["head"](window.to(self.device, self.dtype), valid.to(self.device))
        return wrap_head(self.model_config, tuple(t.float().cpu() for t in outs), valid)


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
        if precision == "fp16" and self.device.type != "cuda":
            raise BackendError(
                "precision fp16 needs a CUDA device (engine.device cuda); use fp32 on the CPU"
            )
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
        args = [frames_to_tensor(images, self.device, self.dtype)]
        if self.motion:
            args.append(frames_to_tensor(previous, self.device, self.dtype))
        return self.graphs["backbone"](*args)[:n].float().cpu()


def model_config_of(model: ActionModel) -> ModelConfig:
    """The shape-defining config of a built model, read from its parts (class names are
    placeholders: backends need only their number)."""
    head = model.head
    classes = tuple(f"class{i}" for i in range(head.num_classes))
    return ModelConfig(
        classes=classes,
        backbone=model.backbone.config,
        temporal=model.temporal.config,
        head=head.config,
    )


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads(providers: list) -> int:
    """ONNX Runtime's intra-op threads when none are asked for: on the CPU every core but one,
    which is left to the reader threads, the detector's Python loop and the publisher
    (measured with 4 streams on 2 cores: same throughput, p99 latency 33 → 24 ms, pipeline
    efficiency 0.83 → 0.95); on CUDA the default (0)."""
    if providers != ["CPUExecutionProvider"]:
        return 0
    return max(1, available_cores() - 1)


ORT_INSTALL = "pip install 'actstream[onnx]' (onnx, onnxruntime, onnxscript)"


class OnnxRuntimeBackend(_ModelFacts):
    """ONNX Runtime sessions over an engine directory's `*.onnx` graphs (CPU, or CUDA with
    onnxruntime-gpu)."""

    name = "onnxruntime"

    def __init__(
        self,
        engine_dir: str | Path,
        config: ModelConfig,
        *,
        precision: str = "fp32",
        device: str = "cpu",
        threads: int = 0,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError(f"onnxruntime is not installed: {ORT_INSTALL}") from None
        self._init_facts(config, precision)
        self.device = torch.device(device)
        available = ort.get_available_providers()
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise BackendError(
                    "onnxruntime on a CUDA device needs onnxruntime-gpu "
                    "(pip install onnxruntime-gpu); or run it with engine.device cpu"
                )
            providers = [("CUDAExecutionProvider", {"device_id": self.device.index or 0})]
        else:
            if precision == "fp16":
                raise BackendError(
                    "onnxruntime fp16 runs on a CUDA device only; compile with --precision fp32"
                )
            providers = ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or default_threads(providers)
        # Idle pool threads would spin on the cores that reader threads and the publisher
        # need (measured: fewer latency spikes with 4 streams on 2 cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.np_dtype = np.float16 if precision == "fp16" else np.float32
        io = graph_io(config, precision)
        self.sessions = {}
        for name in GRAPHS:
            path = Path(engine_dir) / f"{name}.onnx"
            try:
                session = ort.InferenceSession(str(path), options, providers=providers)
            except Exception as exc:  # onnxruntime raises its own untyped errors
                raise BackendError(f"{path}: onnxruntime cannot load it ({exc})") from None
            check_session_io(path, session, io[name])
            self.sessions[name] = session
        self.input_names = {n: [s.name for s in io[n]["inputs"]] for n in GRAPHS}

    def describe(self) -> str:
        return f"onnxruntime {self.precision} on {self.device}"

    def _run(self, name: str, *arrays: np.ndarray) -> list[np.ndarray]:
        feed = dict(zip(self.input_names[name], arrays, strict=True))
        return self.sessions[name].run(None, feed)

    def _float(self, t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().numpy().astype(self.np_dtype, copy=False)

    def encode_frames(self, images: np.ndarray, previous: np.ndarray) -> torch.Tensor:
        scale = self.np_dtype(1.0 / 255.0)
        args = [np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=self.np_dtype) * scale]
        if self.motion:
            args.append(
                np.ascontiguousarray(previous.transpose(0, 3, 1, 2), dtype=self.np_dtype) * scale
            )
        (features,) = self._run("backbone", *args)
        return torch.from_numpy(features.astype(np.float32, copy=False))

    def init_cache(self, batch_size: int) -> FastBackCache:
        return empty_cache(self.model_config, batch_size, torch.float32)

    def temporal_step(
        self, x: torch.Tensor, cache: FastBackCache
    ) -> tuple[torch.Tensor, FastBackCache]:
        arrays = [self._float(x), *(self._float(t) for t in cache[:4]), cache.count.numpy()]
        y, *new = self._run("temporal_step", *arrays)
        return torch.from_numpy(y.astype(np.float32, copy=False)), FastBackCache(
            *(torch.from_numpy(a.astype(np.float32, copy=False)) for a in new[:4]),
            torch.from_numpy(new[4]),
        )

    def head(self, window: torch.Tensor, valid: torch.Tensor) -> HeadOutput | FrameLabels:
        outs = self._run("head", self._float(window), valid.numpy())
        return wrap_head(
            self.model_config,
            tuple(torch.from_numpy(a.astype(np.float32, copy=False)) for a in outs),
            valid,
        )


_ORT_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)"}
_ORT_TYPES |= {"int64": "tensor(int64)", "bool": "tensor(bool)"}


def check_session_io(path: Path, session, io: dict) -> None:
    """Refuses an ONNX graph whose inputs or outputs differ from the manifest's shapes."""
    for kind, actual in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
        expected = io[kind]
        got = [
            (a.name, [d if isinstance(d, int) else None for d in a.shape], a.type) for a in actual
        ]
        want = [(s.name, list(s.shape), _ORT_TYPES[s.dtype]) for s in expected]
        if got != want:
            raise BackendError(
                f"{path}: graph {kind} {got} do not match the manifest's {want}; recompile the "
                "engine directory"
            )
