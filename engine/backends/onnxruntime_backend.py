"""The ONNX Runtime backend: sessions over an engine directory's `*.onnx` graphs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from engine.backends.base import ArrayGraphs, BackendError
from engine.backends.graphs import GRAPHS, graph_io
from models.action_model import ModelConfig


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


class OnnxRuntimeBackend(ArrayGraphs):
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
