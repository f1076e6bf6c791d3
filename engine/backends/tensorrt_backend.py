"""TensorRT backend: the three graphs compiled by torch-tensorrt's dynamo path, saved and
reloaded as ExportedPrograms; optionally the backbone also as a standalone serialized
TensorRT engine run with the `tensorrt` runtime API.

Needs a CUDA GPU, `torch_tensorrt` (its minor version matching torch's) and the TensorRT
libraries from NVIDIA's package index — see README, "TensorRT on a GPU host". Pitfalls this
code handles:

* torch-tensorrt ≥ 2.13 has no `enabled_precisions` on the dynamo path (strong typing is
  always on): fp16 means the model and its inputs are cast to half before export, and
  `use_fp32_acc` keeps matmul accumulation in fp32 (not yet measured on a GPU: the `gpu`
  tests hold fp16 to 1e-2 of eager fp32).
* `torch_tensorrt` is imported before `tensorrt` (it loads its own); a broken install can
  raise more than ImportError, and every kind is reported as a reason (`--backend auto` falls
  back to torch).
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

from engine.backends.base import BackendError, TorchGraphs
from engine.backends.graphs import (
    GRAPHS,
    example_batch_size,
    example_inputs,
    export_program,
    graph_io,
)
from engine.versions import installed_version
from models.action_model import ActionModel, ModelConfig

logger = logging.getLogger(__name__)

TRT_INSTALL = (
    "install torch-tensorrt matching torch's version and TensorRT from NVIDIA's index: "
    "pip install --extra-index-url https://pypi.nvidia.com 'actstream[tensorrt]' "
    "(README: TensorRT on a GPU host)"
)
# What torch-tensorrt 2.13 was built against (its own requirements): the pin of the
# `tensorrt` extra. Another torch-tensorrt needs its own torch minor version.
TORCH_TENSORRT_PIN = "2.13"
TENSORRT_PIN = "11.0"


def tensorrt_problem(device: str) -> str | None:
    """Why the TensorRT backend cannot run here, or None."""
    if not torch.device(device).type == "cuda":
        return f"TensorRT needs a CUDA device (engine.device is {device!r})"
    if not torch.cuda.is_available():
        return "TensorRT needs a CUDA GPU and none is visible to torch"
    return tensorrt_import_problem()


def tensorrt_import_problem() -> str | None:
    """Why torch-tensorrt and TensorRT cannot be imported and used together here, or None.
    torch_tensorrt goes first, as it asks (it loads its TensorRT). A broken install does not
    raise only ImportError: torch-tensorrt's TensorRT proxy raises a plain Exception and an
    ABI mismatch an OSError from `torch.ops.load_library`; each is a reason, not a crash, so
    `--backend auto` falls back to torch."""
    mismatch = version_mismatch()
    if mismatch:
        return mismatch
    for module in ("torch_tensorrt", "tensorrt"):
        try:
            __import__(module)
        except Exception as exc:  # a broken install raises more than ImportError
            if isinstance(exc, ImportError) and exc.name in ("torch_tensorrt", "tensorrt"):
                return f"{exc.name} is not installed: {TRT_INSTALL}"
            return f"{module} cannot be imported ({_one_line(exc)}): {TRT_INSTALL}"
    return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def tensorrt_version_report() -> str:
    """One line: the versions installed against what the TensorRT path needs."""
    torch_v = torch.__version__
    trt_torch = installed_version("torch-tensorrt")
    trt = (
        installed_version("tensorrt")
        or installed_version("tensorrt-cu13")
        or installed_version("tensorrt-cu12")
    )
    cuda = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU build"
    need = _minor(trt_torch) if trt_torch else TORCH_TENSORRT_PIN
    return (
        f"versions: torch {torch_v} ({cuda}), torch-tensorrt "
        f"{trt_torch or 'not installed'} (needs torch {need}.*), tensorrt "
        f"{trt or 'not installed'} (torch-tensorrt {TORCH_TENSORRT_PIN} needs {TENSORRT_PIN}.*)"
    )


def version_mismatch() -> str | None:
    """torch-tensorrt built for another torch minor version, or a torch without CUDA: the
    import may work and the first compile fail, so it is refused up front."""
    trt_torch = installed_version("torch-tensorrt")
    if trt_torch and _minor(trt_torch) != _minor(torch.__version__):
        return (
            f"torch-tensorrt {trt_torch} needs torch {_minor(trt_torch)}.*, but torch is "
            f"{torch.__version__}: pip install 'torch-tensorrt=={_minor(torch.__version__)}.*'"
        )
    if trt_torch and torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build: install a CUDA build of torch"
    return None


def tensorrt_versions() -> dict[str, str]:
    import torch_tensorrt  # noqa: I001 (first, as it asks: it loads its TensorRT)
    import tensorrt

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
        opt = min(max(max_batch // 2, 1), max_batch) if name == "backbone" else 1
        # traced at the optimum: the saved ExportedProgram engine's profile comes from the
        # export's example batch, not from Input(opt_shape=...)
        program = export_program(model, name, config, precision, max_batch, example_batch=opt)
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
            # fp16 under strong typing accumulates matmuls in fp16 too; the temporal path
            # feeds each step's output into the next (15+ steps), so accumulate in fp32
            use_fp32_acc=precision == "fp16",
        )
        logger.info("TensorRT: compiling %s (%s, batch 1..%d)", name, precision, max_batch)
        trt_module = torch_tensorrt.dynamo.compile(program, **settings)
        batch = torch.export.Dim("batch", min=1, max=max(max_batch, 2))
        path = out_dir / f"{name}.ep"
        torch_tensorrt.save(
            trt_module,
            str(path),
            output_format="exported_program",
            arg_inputs=list(
                example_inputs(specs, example_batch_size(opt, max_batch), device=device)
            ),
            dynamic_shapes={s.name: {s.batch_axis: batch} for s in specs},
        )
        files.append(path.name)
        if standalone_engine and name == "backbone":
            # a fresh export: compile() edits the program it is given in place
            program = export_program(model, name, config, precision, max_batch, example_batch=opt)
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
    """A serialized TensorRT engine run with the TensorRT runtime API: inputs bound by name
    (`input_names`, the graph's order), shapes checked against the engine's profile, run on
    a stream of its own ordered after and before torch's current one."""

    def __init__(self, path: Path, device: torch.device, input_names: list[str]) -> None:
        import tensorrt as trt

        self.trt, self.device, self.path = trt, device, path
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BackendError(f"{path}: TensorRT cannot deserialize it (other GPU or version?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = self.engine.get_tensor_mode
        inputs = {n for n in names if mode(n) == trt.TensorIOMode.INPUT}
        if inputs != set(input_names):
            raise BackendError(
                f"{path}: engine inputs {sorted(inputs)} are not the graph's {input_names}; "
                "recompile with actstream compile --standalone-engine"
            )
        self.inputs = list(input_names)
        self.outputs = [n for n in names if mode(n) == trt.TensorIOMode.OUTPUT]
        self.stream = torch.cuda.Stream(device)

    def profile(self, name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        low, _, high = self.engine.get_tensor_profile_shape(name, 0)
        return tuple(low), tuple(high)

    def __call__(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        keep = []
        with torch.cuda.device(self.device):
            current = torch.cuda.current_stream(self.device)
            for name, t in zip(self.inputs, tensors, strict=True):
                t = t.contiguous()
                keep.append(t)
                if not self.context.set_input_shape(name, tuple(t.shape)):
                    low, high = self.profile(name)
                    raise BackendError(
                        f"{self.path}: input {name} of shape {tuple(t.shape)} is outside the "
                        f"engine's profile {low}..{high}; recompile with a larger --max-batch "
                        "or lower engine.max_batch"
                    )
                self._bind(name, t)
            outs = []
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                dtype = torch.from_numpy(
                    np.empty(0, self.trt.nptype(self.engine.get_tensor_dtype(name)))
                ).dtype
                out = torch.empty(shape, dtype=dtype, device=self.device)
                self._bind(name, out)
                outs.append(out)
            self.stream.wait_stream(current)  # the inputs are ready
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise BackendError(f"{self.path}: TensorRT execute_async_v3 failed")
            current.wait_stream(self.stream)  # torch's later work sees the outputs
            for t in keep + outs:
                t.record_stream(self.stream)
        return outs

    def _bind(self, name: str, t: torch.Tensor) -> None:
        if not self.context.set_tensor_address(name, t.data_ptr()):
            raise BackendError(f"{self.path}: TensorRT refused the address of tensor {name}")


class TensorRTBackend(TorchGraphs):
    """Runs the torch-tensorrt compiled graphs of an engine directory on a CUDA device."""

    name = "tensorrt"

    def __init__(
        self,
        engine_dir: str | Path,
        config: ModelConfig,
        *,
        precision: str,
        device: str,
        max_batch: int | None = None,
    ) -> None:
        problem = tensorrt_problem(device)
        if problem:
            raise BackendError(problem)
        import torch_tensorrt

        self._init_facts(config, precision)
        self.batch_limit = max_batch
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
            names = [spec.name for spec in graph_io(config, precision)["backbone"]["inputs"]]
            self.standalone = SerializedEngine(d / "backbone.engine", self.device, names)

    def describe(self) -> str:
        extra = " (backbone: standalone TensorRT engine)" if self.standalone else ""
        return f"tensorrt {self.precision} on {self.device}{extra}"

    @torch.inference_mode()
    def encode_frames(self, images: np.ndarray, previous: np.ndarray) -> torch.Tensor:
        self.check_batch(len(images))
        args = [self.frame_tensor(images, self.device, self.dtype)]
        if self.motion:
            args.append(self.frame_tensor(previous, self.device, self.dtype))
        run = self.standalone or self.graphs["backbone"]
        out = run(*args)
        out = out[0] if isinstance(out, list | tuple) else out
        return out.float().cpu()
