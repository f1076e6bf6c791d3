"""Which backend and precision run here: availability checks, `auto`'s order, and the
library versions recorded with an engine.

Backends, best first: TensorRT (CUDA GPU with torch-tensorrt), ONNX Runtime (measured 1.7-3x
faster than eager PyTorch on this project's CPU machines: README, "Benchmarks"), PyTorch.
OpenVINO (CPU) is chosen by name, or by `actstream compile --backend auto --precision auto`,
which measures every backend and precision this host can run (`engine.backends.measure`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from engine.backends.base import BackendError
from engine.backends.manifest import (
    BACKENDS,
)
from engine.backends.onnxruntime_backend import ORT_INSTALL
from engine.backends.openvino_backend import OPENVINO_INSTALL
from engine.backends.tensorrt_backend import tensorrt_problem, tensorrt_version_report
from engine.checkpoint import versions
from engine.cpu import PRECISION_UNITS, precision_problem
from engine.loader import check_positive


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """Attributes:
    device: torch device for the model ("cpu", "cuda", "cuda:1").
    max_batch: most frames through the backbone at once (across streams).
    backend: auto | tensorrt | onnxruntime | openvino | torch (auto: the best that runs here).
    precision: auto | fp32 | fp16 | bf16 | int8 (auto: fp16 for tensorrt, else fp32; fp16
        needs CUDA; bf16 and int8 are CPU precisions, `BACKEND_PRECISIONS`).
    engine_dir: a compiled engine directory (actstream compile) to run instead of weights.
    torch_compile: run the torch backend through torch.compile.
    cuda_graphs: CUDA graphs for the torch backend (null: on when the device is CUDA).
    threads: ONNX Runtime intra-op threads (0: on the CPU every core but one, which is left
        to the readers; on CUDA ONNX Runtime's default).
    head_stride: run the head every this many frames of a stream (null: the model's
        `head.stride_frames`); an inference-time choice the weights do not depend on.
    """

    device: str = "cpu"
    max_batch: int = 32
    backend: Literal["auto", "tensorrt", "onnxruntime", "openvino", "torch"] = "auto"
    precision: Literal["auto", "fp32", "fp16", "bf16", "int8"] = "auto"
    engine_dir: str | None = None
    torch_compile: bool = False
    cuda_graphs: bool | None = None
    threads: int = 0
    head_stride: int | None = None

    def __post_init__(self) -> None:
        check_positive(self, "max_batch")
        if self.head_stride is not None and self.head_stride < 1:
            raise ValueError(f"head_stride must be >= 1 or null, got {self.head_stride}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")


def onnx_problem() -> str | None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed: {ORT_INSTALL}"
    return None


def backend_problem(name: str, device: str) -> str | None:
    """Why backend `name` cannot run on `device` here (with how to fix it), or None."""
    if name == "tensorrt":
        problem = tensorrt_problem(device)
        return f"{problem}; {tensorrt_version_report()}" if problem else None
    if name == "onnxruntime":
        problem = onnx_problem()
        if problem or torch.device(device).type != "cuda":
            return problem
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return (
                "onnxruntime on a CUDA device needs onnxruntime-gpu (pip install onnxruntime-gpu)"
            )
        return None
    if name == "openvino":
        if torch.device(device).type != "cpu":
            return f"the openvino backend runs on the CPU here (engine.device is {device!r})"
        try:
            import openvino  # noqa: F401
        except ImportError:
            return f"openvino is not installed: {OPENVINO_INSTALL}"
        return onnx_problem()  # it runs the exported ONNX graphs
    if name == "torch":
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            return f"engine.device {device!r} but torch sees no CUDA GPU"
        return None
    return f"unknown backend {name!r} (choose from auto, {', '.join(BACKENDS)})"


def choose_backend(requested: str, device: str) -> str:
    """`requested` if it can run here, else `BackendError`; for "auto" the best that can:
    tensorrt > torch on a CUDA device (ONNX Runtime's CUDA provider is not preferred over
    CUDA graphs), onnxruntime > torch on the CPU."""
    if requested != "auto":
        problem = backend_problem(requested, device)
        if problem:
            raise BackendError(f"backend {requested} is unavailable: {problem}")
        return requested
    order = (
        ("tensorrt", "torch") if torch.device(device).type == "cuda" else ("onnxruntime", "torch")
    )
    for name in order:
        if backend_problem(name, device) is None:
            return name
    raise BackendError(f"no backend can run on {device}: {backend_problem('torch', device)}")


# The precisions each backend offers. fp16 runs on CUDA only; bf16 and int8 are CPU
# precisions that need the CPU's bf16 or int8 dot-product units (`engine.cpu`): bf16 through
# oneDNN (torch autocast, channels-last) or OpenVINO's bf16 inference; int8 as the backbone
# graph quantised to QDQ form (`engine.backends.quantize`), run by ONNX Runtime or OpenVINO.
BACKEND_PRECISIONS = {
    "tensorrt": ("fp16", "fp32"),
    "onnxruntime": ("fp32", "fp16", "int8"),
    "openvino": ("fp32", "bf16", "int8"),
    "torch": ("fp32", "fp16", "bf16"),
}


def check_precision(precision: str, device: str, backend: str | None = None) -> None:
    """Refuses, in one line naming what is missing, a precision that `backend` does not
    offer or that `device` cannot run."""
    offered = BACKEND_PRECISIONS.get(backend) if backend else None
    if offered is not None and precision not in offered:
        raise BackendError(
            f"backend {backend} offers precision {' / '.join(offered)}, not {precision}"
        )
    cuda = torch.device(device).type == "cuda"
    if precision == "fp16" and not cuda:
        raise BackendError(
            f"precision fp16 needs a CUDA device (device is {device!r}); on the CPU use fp32, "
            "or bf16 / int8 where the CPU has the units"
        )
    if precision in PRECISION_UNITS:
        if cuda:
            raise BackendError(
                f"precision {precision} is a CPU precision here (device is {device!r}); on a "
                "GPU use fp16"
            )
        problem = precision_problem(precision)
        if problem:
            raise BackendError(problem)


def default_precision(backend: str) -> str:
    return "fp16" if backend == "tensorrt" else "fp32"


def library_versions(backend: str) -> dict[str, str]:
    out = versions()
    if backend == "onnxruntime":
        import onnx
        import onnxruntime

        out |= {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    if backend == "openvino":
        import onnx
        import openvino

        out |= {"onnx": onnx.__version__, "openvino": openvino.__version__.split("-")[0]}
    if backend == "tensorrt":
        from engine.backends.tensorrt_backend import tensorrt_versions

        out |= tensorrt_versions()
    return out
