"""The engine cache: `actstream run --weights` compiles on the fly for the chosen backend and
keeps the result in a cache directory keyed by the weights' SHA-256, so the next start is
immediate.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
from collections.abc import Iterator
from pathlib import Path

from engine.backends.base import Backend, BackendError
from engine.backends.cache_dir import cache_base
from engine.backends.choice import check_precision, choose_backend, default_precision
from engine.backends.compile import compile_engine, load_engine
from engine.backends.manifest import (
    MANIFEST,
    EngineError,
    weights_sha256,
)
from engine.backends.torch_backend import TorchBackend
from models.action_model import ActionModel, ModelConfig

logger = logging.getLogger(__name__)


def cache_root() -> Path:
    return cache_base() / "engines"


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
    check_precision(precision, device, name)
    if precision == "int8":
        raise BackendError(
            "precision int8 runs from a calibrated engine directory: actstream compile "
            "CHECKPOINT --precision int8 --out DIR, then actstream run --engine DIR"
        )
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
    with _locked(target):  # a second process with the same weights waits, then loads
        try:
            backend_obj, manifest = load()
            if manifest.weights_sha256 == digest and manifest.model == config:
                logger.info("using the cached %s engine %s", name, target)
                return backend_obj
        except (EngineError, BackendError) as exc:
            if (target / MANIFEST).exists():
                logger.warning("recompiling the cached engine: %s", exc)
        logger.info(
            "compiling the weights for %s (%s) into %s; later starts reuse it",
            name,
            precision,
            target,
        )
        compile_engine(
            model,
            config,
            target,
            backend=name,
            precision=precision,
            max_batch=max_batch,
            device=device,
        )
        return load()[0]


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """Holds an advisory lock on `<cache>/locks/<entry>.lock`: processes that start with the
    same weights at once compile them once, and none reads an entry another is replacing."""
    locks = target.parent.parent / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{target.name}.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process compiling into %s", target)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
