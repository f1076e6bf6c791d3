"""Compile a checkpoint into an engine directory, load one back, and pick the backend.

Backends, best first: TensorRT (CUDA GPU with torch-tensorrt), ONNX Runtime (measured 1.7-3x
faster than eager PyTorch on this project's CPU machines: README, "Benchmarks"), PyTorch.
`actstream run --weights` compiles on the fly for the chosen backend and keeps the result
in a cache directory keyed by the weights' SHA-256, so the next start is immediate.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, versions
from engine.export import export_onnx
from engine.manifest import (
    BACKENDS,
    MANIFEST,
    EngineError,
    Manifest,
    file_sha256,
    read_manifest,
    weights_sha256,
    write_manifest,
)
from engine.runtime import ORT_INSTALL, Backend, BackendError, OnnxRuntimeBackend, TorchBackend
from engine.tensorrt_backend import TensorRTBackend, build_tensorrt, tensorrt_problem
from models.action_model import ActionModel, ModelConfig

logger = logging.getLogger(__name__)

CACHE_ENV = "ACTSTREAM_CACHE_DIR"


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
        return tensorrt_problem(device)
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


def check_precision(precision: str, device: str) -> None:
    if precision == "fp16" and torch.device(device).type != "cuda":
        raise BackendError(
            f"precision fp16 needs a CUDA device (device is {device!r}); use fp32 on the CPU"
        )


def default_precision(backend: str) -> str:
    return "fp16" if backend == "tensorrt" else "fp32"


def library_versions(backend: str) -> dict[str, str]:
    out = versions()
    if backend == "onnxruntime":
        import onnx
        import onnxruntime

        out |= {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    if backend == "tensorrt":
        from engine.tensorrt_backend import tensorrt_versions

        out |= tensorrt_versions()
    return out


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


def cache_root() -> Path:
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "actstream"
    )
    return Path(base) / "engines"


def prepare_backend(
    model: ActionModel,
    config: ModelConfig,
    *,
    backend: str = "auto",
    precision: str = "auto",
    device: str = "cpu",
    max_batch: int = 32,
    torch_compile: bool = False,
    cuda_graphs: bool | None = None,
    threads: int = 0,
) -> Backend:
    """The backend for in-memory weights (`actstream run --weights`): torch runs them as
    they are; the others compile once into the engine cache and load from there."""
    name = choose_backend(backend, device)
    precision = default_precision(name) if precision == "auto" else precision
    check_precision(precision, device)
    if name == "torch":
        return TorchBackend(
            model,
            device,
            precision=precision,
            compile=torch_compile,
            cuda_graphs=cuda_graphs,
            max_batch=max_batch,
        )
    digest = weights_sha256(model.state_dict())
    target = cache_root() / f"{name}-{precision}-b{max_batch}-{digest[:20]}"
    load = functools.partial(
        load_engine,
        target,
        device=device,
        torch_compile=torch_compile,
        cuda_graphs=cuda_graphs,
        threads=threads,
    )
    try:
        backend_obj, manifest = load()
        if manifest.weights_sha256 == digest and manifest.model == config:
            logger.info("using the cached %s engine %s", name, target)
            return backend_obj
    except (EngineError, BackendError) as exc:
        if (target / MANIFEST).exists():
            logger.warning("recompiling the cached engine: %s", exc)
    logger.info(
        "compiling the weights for %s (%s) into %s; later starts reuse it", name, precision, target
    )
    compile_engine(
        model, config, target, backend=name, precision=precision, max_batch=max_batch, device=device
    )
    return load()[0]
