"""The OpenVINO backend: the engine directory's ONNX graphs compiled for the CPU by OpenVINO
(the CPU runtime Frigate's detectors use), at fp32, bf16 (its bf16 inference precision,
on CPUs with AVX512-BF16 or AMX) or int8 (the QDQ-quantised backbone graph the int8 compile
writes, which OpenVINO runs on its int8 kernels). Compiled models are kept in OpenVINO's
model cache (`<cache>/openvino/`), so a second start skips the compile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.backends.base import ArrayGraphs, BackendError
from engine.backends.cache_dir import cache_base
from engine.backends.graphs import GRAPHS, graph_io
from models.action_model import ModelConfig

OPENVINO_INSTALL = "pip install 'actstream[openvino]' (openvino)"

# OpenVINO's inference precision per actstream precision. At int8 the quantised backbone's
# QDQ pairs decide what runs in int8; the float graphs around them stay f32.
_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


class OpenVinoBackend(ArrayGraphs):
    """OpenVINO compiled models over an engine directory's `*.onnx` graphs (CPU only)."""

    name = "openvino"

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
            import openvino as ov
        except ImportError:
            raise BackendError(f"openvino is not installed: {OPENVINO_INSTALL}") from None
        from engine.backends.onnxruntime_backend import default_threads

        if torch.device(device).type != "cpu":
            raise BackendError(f"the openvino backend runs on the CPU (device is {device!r})")
        if precision not in _HINTS:
            raise BackendError(f"openvino runs fp32, bf16 or int8, not {precision}")
        self._init_facts(config, precision)
        self.device = torch.device("cpu")
        self.threads = threads or default_threads(["CPUExecutionProvider"])
        core = ov.Core()
        cache = cache_base() / "openvino"
        cache.mkdir(parents=True, exist_ok=True)
        properties = {
            "INFERENCE_PRECISION_HINT": _HINTS[precision],
            "INFERENCE_NUM_THREADS": self.threads,
            "PERFORMANCE_HINT": "LATENCY",
            # Pinned threads would hold the cores the readers and the publisher need (and
            # were slower here: ResNet-18-class int8 238 against 329 frames/s unpinned).
            "ENABLE_CPU_PINNING": False,
            "CACHE_DIR": str(cache),
        }
        io = graph_io(config, precision)
        self.requests, self.outputs = {}, {}
        for name in GRAPHS:
            path = Path(engine_dir) / f"{name}.onnx"
            try:
                compiled = core.compile_model(core.read_model(str(path)), "CPU", properties)
            except Exception as exc:  # OpenVINO raises RuntimeError for every kind of failure
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise BackendError(f"{path}: openvino cannot compile it ({first})") from None
            check_model_io(path, compiled, io[name])
            self.requests[name] = compiled.create_infer_request()
            self.outputs[name] = len(compiled.outputs)

    def describe(self) -> str:
        return f"openvino {self.precision} on cpu ({self.threads} threads)"

    def _run(self, name: str, *arrays: np.ndarray) -> list[np.ndarray]:
        request = self.requests[name]
        request.infer(list(arrays))
        # The request's output buffers are reused by its next call: copy them out.
        return [request.get_output_tensor(i).data.copy() for i in range(self.outputs[name])]


def check_model_io(path: Path, compiled, io: dict) -> None:
    """Refuses a graph whose input or output names and ranks differ from the manifest's."""
    for kind, ports in (("inputs", compiled.inputs), ("outputs", compiled.outputs)):
        got = [(p.get_any_name(), p.get_partial_shape().rank.get_length()) for p in ports]
        want = [(s.name, len(s.shape)) for s in io[kind]]
        if got != want:
            raise BackendError(
                f"{path}: graph {kind} {got} do not match the manifest's {want}; recompile the "
                "engine directory"
            )
