"""Stable patient -> bucket assignment.

The bucket decides which file a patient's rows live in, so it must never change between library versions:
``pl.Expr.hash`` does (pitfall P14), hence a fixed, named algorithm recorded in the manifest.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
import xxhash

HASH_NAME = "xxh64"
"""xxHash64 with seed 0 over the UTF-8 bytes of the patient id, as an unsigned 64-bit integer, modulo N."""

MAX_BUCKETS = 65536  # buckets are stored as UInt16


def bucket_of(patient_ids: Iterable[str], n_buckets: int) -> npt.NDArray[np.uint16]:
    """The bucket of every id: ``xxh64(id.encode()) % n_buckets`` (about 0.3 s per million ids)."""
    if not 1 <= n_buckets <= MAX_BUCKETS:
        raise ValueError(f"n_buckets must be in 1..{MAX_BUCKETS}, got {n_buckets}")
    digest = xxhash.xxh64_intdigest
    hashes = np.fromiter((digest(pid.encode()) for pid in patient_ids), dtype=np.uint64)
    return (hashes % np.uint64(n_buckets)).astype(np.uint16)
