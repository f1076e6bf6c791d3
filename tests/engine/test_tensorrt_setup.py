"""The TensorRT path's set-up on a host without TensorRT (here, and CI): broken installs of
every kind are a reason, not a crash, and `auto` falls back; versions are checked and
reported; batches beyond an engine's profile are refused in one line; the GPU tests cannot
pass with TensorRT untested when it is required."""

import os
import subprocess
import sys

import pytest
import torch

from engine.backends.base import BackendError
from engine.backends.choice import backend_problem, choose_backend
from engine.backends.tensorrt_backend import tensorrt_import_problem, version_mismatch
from engine.backends.torch_backend import TorchBackend
from engine.config import load_config
from models.action_model import build_model
from tests.conftest import ROOT, scaled
from tests.integration.helpers import small_model

BROKEN = {
    "plain Exception": 'raise Exception("TensorRT proxy: libnvinfer.so.11 not found")',
    "OSError": 'raise OSError("libtorchtrt.so: undefined symbol: _ZN3c10")',
    "missing dependency": "import nvidia_modelopt_that_is_not_there",
}


@pytest.fixture
def fake_torch_tensorrt(tmp_path, monkeypatch):
    """Puts a `torch_tensorrt` package whose import runs `code` first on sys.path."""

    def install(code: str, version: str | None = None):
        package = tmp_path / "torch_tensorrt"
        package.mkdir(exist_ok=True)
        (package / "__init__.py").write_text(code + "\n")
        if version:
            info = tmp_path / f"torch_tensorrt-{version}.dist-info"
            info.mkdir(exist_ok=True)
            (info / "METADATA").write_text(
                f"Metadata-Version: 2.1\nName: torch_tensorrt\nVersion: {version}\n"
            )
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, "torch_tensorrt", raising=False)

    return install


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_broken_torch_tensorrt_is_a_reason_and_auto_falls_back_to_torch(
    fake_torch_tensorrt, monkeypatch, kind
):
    fake_torch_tensorrt(BROKEN[kind])
    problem = tensorrt_import_problem()
    assert problem and problem.startswith("torch_tensorrt cannot be imported ("), problem
    assert "README: TensorRT on a GPU host" in problem and "\n" not in problem
    # as on a GPU host: torch sees CUDA, TensorRT is broken → auto is torch, explicit is a line
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_backend("auto", "cuda") == "torch"
    with pytest.raises(BackendError, match="backend tensorrt is unavailable: torch_tensorrt"):
        choose_backend("tensorrt", "cuda")


def test_torch_tensorrt_for_another_torch_is_refused_with_the_pin_to_install(
    fake_torch_tensorrt, monkeypatch
):
    fake_torch_tensorrt("", version="2.12.1")
    minor = ".".join(torch.__version__.split(".")[:2])
    mismatch = version_mismatch()
    assert mismatch == (
        f"torch-tensorrt 2.12.1 needs torch 2.12.*, but torch is {torch.__version__}: "
        f"pip install 'torch-tensorrt=={minor}.*'"
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert mismatch in backend_problem("tensorrt", "cuda")


def test_a_missing_torch_tensorrt_says_install_it():
    problem = tensorrt_import_problem()
    if problem is None:
        pytest.skip("torch_tensorrt is installed here")
    assert problem.startswith("torch_tensorrt is not installed: install torch-tensorrt")


def test_a_batch_beyond_a_compiled_engines_bound_is_one_clear_error():
    config = load_config(None, small_model()).model
    backend = TorchBackend(build_model(config).eval())
    backend.batch_limit = 4  # as a TensorRT engine compiled with --max-batch 4
    window = torch.zeros(5, config.head.window_frames, config.temporal.dim)
    with pytest.raises(BackendError, match="a batch of 5 is beyond this engine's --max-batch 4"):
        backend.head(window, torch.ones(5, config.head.window_frames, dtype=torch.bool))
    backend.head(window[:4], torch.ones(4, config.head.window_frames, dtype=torch.bool))


@pytest.mark.skipif(torch.cuda.is_available(), reason="shows the gate on a host without a GPU")
def test_required_tensorrt_turns_the_gpu_tests_skip_into_a_failure(tmp_path):
    run = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu"]
    target = ["tests/engine/test_gpu.py", "-k", "runs_the_graphs_in_tensorrt"]
    plain = subprocess.run(
        [*run, *target], capture_output=True, text=True, cwd=ROOT, timeout=scaled(120)
    )
    assert plain.returncode == 0 and "skipped" in plain.stdout, plain.stdout
    required = subprocess.run(
        [*run, *target],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=scaled(120),
        env={**os.environ, "ACTSTREAM_REQUIRE_TENSORRT": "1"},
    )
    assert required.returncode == 1, required.stdout
    assert "ACTSTREAM_REQUIRE_TENSORRT=1 but TensorRT needs a CUDA GPU" in required.stdout


def test_the_install_pins_agree_with_each_other_and_with_the_version_check():
    """torch-tensorrt's minor version is torch's: the `tensorrt` extra, the GPU constraints
    and the CPU constraints name one pair, the one the version check expects."""
    import tomllib

    from engine.backends.tensorrt_backend import TORCH_TENSORRT_PIN

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["tensorrt"]
    assert extra == [f"torch-tensorrt=={TORCH_TENSORRT_PIN}.*"]
    pins = {
        line.split("==")[0]: line.split("==")[1]
        for line in (ROOT / "configs" / "gpu-constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert pins == {"torch": f"{TORCH_TENSORRT_PIN}.*", "torch-tensorrt": f"{TORCH_TENSORRT_PIN}.*"}
    cpu = (ROOT / "constraints.txt").read_text()
    assert f"torch=={TORCH_TENSORRT_PIN}." in cpu
