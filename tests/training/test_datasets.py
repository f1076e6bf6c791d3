"""Dataset conversion: HAPT's labels to segments, its subject split, and an unpickler that
admits nothing but what the HAPT pickle needs."""

from __future__ import annotations

import gzip
import io
import os
import pickle

import numpy as np
import pytest

from training.datasets import (
    HAPT_TEST_SUBJECTS,
    DatasetError,
    hapt_subset,
    label_segments,
    read_hapt,
)


def test_label_runs_become_segments_and_unlabelled_samples_are_null():
    labels = np.array([-1, -1, 5, 5, 5, 7, 7, -1, 4, 4])
    assert label_segments(labels, 2.0) == [(1.0, 2.5, 5), (2.5, 3.5, 7), (4.0, 5.0, 4)]
    assert label_segments(np.array([-1, -1]), 50.0) == []


def test_the_split_is_by_subject_with_ucis_test_subjects():
    assert {hapt_subset(s) for s in HAPT_TEST_SUBJECTS} == {"test"}
    assert hapt_subset(1) == "train" and hapt_subset(30) == "validation"
    assert len(HAPT_TEST_SUBJECTS) == 9


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_the_unpickler_refuses_anything_but_the_datasets_own_classes():
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb") as f:
        pickle.dump({1: [_Evil()]}, f, protocol=2)
    with pytest.raises(DatasetError, match="refusing to load"):
        read_hapt(raw.getvalue())
