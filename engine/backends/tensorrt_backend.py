"""TensorRT backend: the three graphs compiled by torch-tensorrt's dynamo path, saved and
reloaded as ExportedPrograms; optionally the backbone also as a standalone serialized
TensorRT engine run with the `tensorrt` runtime API.

Needs a CUDA GPU, `torch_tensorrt` (its minor version matching torch's) and the TensorRT
libraries from NVIDIA's package index — see README, "TensorRT on a GPU host". Pitfalls this
code handles:

* torch-tensorrt ≥ 2.13 has no `enabled_precisions` on the dynamo path (strong typing is
  always on): fp16 means the model and its inputs are cast to half before export.
* torch-tensorrt ≥ 2.11 may replace an attention bias with a plain causal mask
  (`attn_bias_is_causal`, default True); our masks are windows, so it is set False. (Our
  attention is written as matmul + masked softmax, not SDPA, so the pass should not fire;
  the setting guards against a future lowering that fuses it.)
* Fully masked attention rows: the models mask with the dtype's most negative finite value,
  never -inf, so a row without any visible key gives finite values in fp16 too.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from engine.backends.base import BackendError, TorchGraphs, frames_to_tensor
from engine.backends.graphs import GRAPHS, example_inputs, export_program, graph_io
from models.action_model import ActionModel, ModelConfig

logger = logging.getLogger(__name__)

TRT_INSTALL = (
    "install torch-tensorrt matching torch's version and TensorRT from NVIDIA's index: "
    "pip install --extra-index-url https://pypi.nvidia.com 'actstream[tensorrt]' "
    "(README: TensorRT on a GPU host)"
)


def tensorrt_problem(device: str) -> str | None:
    """Why the TensorRT backend cannot run here, or None."""
    if not torch.device(device).type == "cuda":
        return f"TensorRT needs a CUDA device (engine.device is {device!r})"
    if not torch.cuda.is_available():
        return "TensorRT needs a CUDA GPU and none is visible to torch"
    try:
        import tensorrt  # noqa: F401
        import torch_tensorrt  # noqa: F401
    except ImportError as exc:
        return f"{exc.name or 'tensorrt'} is not installed: {TRT_INSTALL}"
    return None


def tensorrt_versions() -> dict[str, str]:
    import tensorrt
    import torch_tensorrt

    return {"torch_tensorrt": torch_tensorrt.__version__, "tensorrt": tensorrt.__version__}


def build_tensorrt(
    model: ActionModel,
    config: ModelConfig,
    out_dir: Path,
    *,
    precision: str,
    max_batch: int,
    device: str,
    standalone_engine: bool = False,
) -> list[str]:
    """Compiles the graphs into `out_dir`; returns the artifact file names."""
    import torch_tensorrt

    dtype = torch.float16 if precision == "fp16" else torch.float32
    model = model.to(device, dtype).eval()  # fp16: cast first (see the module docstring)
    io = graph_io(config, precision)
    files = []
    for name in GRAPHS:
        specs = io[name]["inputs"]
        program = export_program(model, name, config, precision, max_batch)
        opt = min(max(max_batch // 2, 1), max_batch) if name == "backbone" else 1
        inputs = [
            torch_tensorrt.Input(
                min_shape=_shape(s.shape, 1),
                opt_shape=_shape(s.shape, opt),
                max_shape=_shape(s.shape, max_batch),
                dtype=_torch_dtype(s.dtype),
                name=s.name,
            )
            for s in specs
        ]
        settings = dict(
            arg_inputs=inputs,
            min_block_size=1,
            truncate_double=True,
            attn_bias_is_causal=False,
            optimization_level=3,
        )
        logger.info("TensorRT: compiling %s (%s, batch 1..%d)", name, precision, max_batch)
        trt_module = torch_tensorrt.dynamo.compile(program, **settings)
        batch = torch.export.Dim("batch", min=1, max=max(max_batch, 2))
        path = out_dir / f"{name}.ep"
        torch_tensorrt.save(
            trt_module,
            str(path),
            output_format="exported_program",
            arg_inputs=list(example_inputs(specs, 2, device=device)),
            dynamic_shapes={s.name: {s.batch_axis: batch} for s in specs},
        )
        files.append(path.name)
        if standalone_engine and name == "backbone":
            plan = torch_tensorrt.dynamo.convert_exported_program_to_serialized_trt_engine(
                program, **settings
            )
            (out_dir / "backbone.engine").write_bytes(plan)
            files.append("backbone.engine")
    return files


def _shape(shape: tuple[int | None, ...], batch: int) -> tuple[int, ...]:
    return tuple(batch if d is None else d for d in shape)


def _torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float16": torch.float16}.get(name) or getattr(torch, name)


class SerializedEngine:
    """A serialized TensorRT engine run with the TensorRT runtime API (name-based I/O,
    `execute_async_v3` on torch's current CUDA stream)."""

    def __init__(self, path: Path, device: torch.device) -> None:
        import tensorrt as trt

        self.trt, self.device = trt, device
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BackendError(f"{path}: TensorRT cannot deserialize it (other GPU or version?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = self.engine.get_tensor_mode
        self.inputs = [n for n in names if mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if mode(n) == trt.TensorIOMode.OUTPUT]

    def __call__(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        keep = []
        for name, t in zip(self.inputs, tensors, strict=True):
            t = t.contiguous()
            keep.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        outs = []
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = torch.from_numpy(
                np.empty(0, self.trt.nptype(self.engine.get_tensor_dtype(name)))
            ).dtype
            out = torch.empty(shape, dtype=dtype, device=self.device)
            self.context.set_tensor_address(name, out.data_ptr())
            outs.append(out)
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        stream.synchronize()
        return outs


class TensorRTBackend(TorchGraphs):
    """Runs the torch-tensorrt compiled graphs of an engine directory on a CUDA device."""

    name = "tensorrt"

    def __init__(
        self, engine_dir: str | Path, config: ModelConfig, *, precision: str, device: str
    ) -> None:
        problem = tensorrt_problem(device)
        if problem:
            raise BackendError(problem)
        import torch_tensorrt

        self._init_facts(config, precision)
        self.device = torch.device(device)
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        d = Path(engine_dir)
        self.graphs = {}
        for name in GRAPHS:
            try:
                self.graphs[name] = torch_tensorrt.load(str(d / f"{name}.ep")).module()
            except Exception as exc:  # torch-tensorrt raises ValueError/RuntimeError variously
                raise BackendError(f"{d / (name + '.ep')}: cannot load ({exc})") from None
        self.standalone = None
        if (d / "backbone.engine").is_file():
            self.standalone = SerializedEngine(d / "backbone.engine", self.device)

    def describe(self) -> str:
        extra = " (backbone: standalone TensorRT engine)" if self.standalone else ""
        return f"tensorrt {self.precision} on {self.device}{extra}"

    @torch.inference_mode()
    def encode_frames(self, images: np.ndarray, previous: np.ndarray) -> torch.Tensor:
        args = [frames_to_tensor(images, self.device, self.dtype)]
        if self.motion:
            args.append(frames_to_tensor(previous, self.device, self.dtype))
        run = self.standalone or self.graphs["backbone"]
        out = run(*args)
        out = out[0] if isinstance(out, list | tuple) else out
        return out.float().cpu()
