"""The bucket of a patient must never change: these pinned values fail if the algorithm does."""

from __future__ import annotations

import numpy as np
import pytest
import xxhash

from datasets.hashing import HASH_NAME, bucket_of

IDS = ["p00000000", "p00000001", "p00000002", "patient-42", "0b8f3a52-1d2e-4c7a-9f1e-3d5b6a7c8e9f", "é"]


def test_hash_name_is_recorded() -> None:
    assert HASH_NAME == "xxh64"


def test_known_buckets_are_stable() -> None:
    assert bucket_of(IDS, 64).tolist() == PINNED_64
    assert bucket_of(IDS, 4096).tolist() == PINNED_4096


def test_matches_the_reference_definition() -> None:
    expected = [xxhash.xxh64_intdigest(i.encode("utf-8")) % 1024 for i in IDS]
    assert bucket_of(IDS, 1024).tolist() == expected


def test_dtype_and_range() -> None:
    got = bucket_of((f"p{i}" for i in range(10_000)), 16)
    assert got.dtype == np.uint16
    assert got.min() == 0 and got.max() == 15
    assert np.bincount(got).min() > 500  # roughly uniform


def test_bad_bucket_count() -> None:
    with pytest.raises(ValueError):
        bucket_of(IDS, 0)
    with pytest.raises(ValueError):
        bucket_of(IDS, 70_000)


# xxh64(seed 0) of the UTF-8 bytes, modulo N; computed once and pinned.
PINNED_64 = [57, 59, 14, 50, 33, 56]
PINNED_4096 = [57, 2235, 1038, 2546, 481, 3960]
