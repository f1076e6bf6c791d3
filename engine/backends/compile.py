"""Compile a checkpoint into an engine directory (manifest plus the backend's artifacts),
and load one back as a backend.
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
import time
from pathlib import Path

import torch

from engine.backends.base import Backend, BackendError
from engine.backends.choice import backend_problem, check_precision, library_versions
from engine.backends.graphs import export_onnx
from engine.backends.manifest import (
    BACKENDS,
    MANIFEST,
    EngineError,
    Manifest,
    file_sha256,
    read_manifest,
    weights_sha256,
    write_manifest,
)
from engine.backends.onnxruntime_backend import OnnxRuntimeBackend
from engine.backends.tensorrt_backend import TensorRTBackend, build_tensorrt
from engine.backends.torch_backend import TorchBackend
from engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from models.action_model import ActionModel, ModelConfig

logger = logging.getLogger(__name__)


def compile_engine(
    model: ActionModel,
    config: ModelConfig,
    out_dir: str | Path,
    *,
    backend: str,
    precision: str,
    max_batch: int,
    device: str = "cpu",
    standalone_engine: bool = False,
    step: int = 0,
) -> Manifest:
    """Writes an engine directory for `backend`: artifacts first, then `manifest.json`, all in
    a temporary sibling directory renamed into place, so a failed compile leaves nothing
    half-written behind."""
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    problem = backend_problem(backend, device)
    if problem:
        raise BackendError(f"backend {backend} is unavailable: {problem}")
    check_precision(precision, device)
    if standalone_engine and backend != "tensorrt":
        raise BackendError("--standalone-engine applies to the tensorrt backend only")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not (out / MANIFEST).is_file():
        raise BackendError(f"{out}: exists and is not an engine directory; choose another --out")
    digest = weights_sha256(model.state_dict())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        started = time.perf_counter()
        model = model.eval()
        if backend == "torch":
            dtype = torch.float16 if precision == "fp16" else None
            save_checkpoint(tmp / "model.pt", model, config, step=step, weights_dtype=dtype)
            files = ["model.pt"]
        elif backend == "onnxruntime":
            dtype = torch.float16 if precision == "fp16" else torch.float32
            paths = export_onnx(
                copy.deepcopy(model).to(device, dtype),
                tmp,
                config,
                precision=precision,
                max_batch=max_batch,
            )
            files = [p.name for p in paths.values()]
        else:
            files = build_tensorrt(
                copy.deepcopy(model),
                config,
                tmp,
                precision=precision,
                max_batch=max_batch,
                device=device,
                standalone_engine=standalone_engine,
            )
        manifest = Manifest(
            backend=backend,
            precision=precision,
            max_batch=max_batch,
            model=config,
            weights_sha256=digest,
            files={name: file_sha256(tmp / name) for name in files},
            versions=library_versions(backend),
            notes={
                "device": _device_name(device),
                "compile_seconds": round(time.perf_counter() - started, 2),
            },
        )
        write_manifest(tmp, manifest)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _device_name(device: str) -> str:
    d = torch.device(device)
    if d.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(d)
    return "cpu"


def load_engine(
    engine_dir: str | Path,
    *,
    device: str = "cpu",
    torch_compile: bool = False,
    cuda_graphs: bool | None = None,
    threads: int = 0,
) -> tuple[Backend, Manifest]:
    """Checks an engine directory (`read_manifest`) and builds its backend on `device`."""
    manifest = read_manifest(engine_dir)
    d = Path(engine_dir)
    problem = backend_problem(manifest.backend, device)
    if problem:
        raise BackendError(f"{d}: compiled for {manifest.backend}, which is unavailable: {problem}")
    _check_versions(d, manifest)
    if manifest.backend == "torch":
        try:
            model, config, _ = load_checkpoint(d / "model.pt", "cpu")
        except CheckpointError as exc:
            raise EngineError(str(exc)) from None
        if config != manifest.model:
            raise EngineError(f"{d}: model.pt's config disagrees with the manifest; recompile")
        backend: Backend = TorchBackend(
            model,
            device,
            precision=manifest.precision,
            compile=torch_compile,
            cuda_graphs=cuda_graphs,
            max_batch=manifest.max_batch,
        )
    elif manifest.backend == "onnxruntime":
        backend = OnnxRuntimeBackend(
            d, manifest.model, precision=manifest.precision, device=device, threads=threads
        )
    else:
        backend = TensorRTBackend(d, manifest.model, precision=manifest.precision, device=device)
    return backend, manifest


def _check_versions(engine_dir: Path, manifest: Manifest) -> None:
    """TensorRT engines only run with the TensorRT they were built with; other backends
    warn when a library's version changed since compile."""
    now = library_versions(manifest.backend)
    for lib in ("tensorrt", "torch_tensorrt", "onnxruntime", "torch"):
        then = manifest.versions.get(lib)
        if then is None or now.get(lib) == then:
            continue
        if manifest.backend == "tensorrt" and lib in ("tensorrt", "torch_tensorrt"):
            raise EngineError(
                f"{engine_dir}: built with {lib} {then}, this host has {now.get(lib)}; "
                "recompile it here with actstream compile"
            )
        logger.warning(
            "%s: compiled with %s %s, running with %s", engine_dir, lib, then, now.get(lib)
        )
