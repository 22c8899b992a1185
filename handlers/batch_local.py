"""The local executor: the batch functions on a process pool, so a laptop run and a Lambda run share code."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from datasets import storage
from handlers import batch


@dataclass(frozen=True)
class LocalRun:
    run: batch.RunPlan
    summary: batch.Summary


def _shard(run: dict[str, Any], index: int) -> batch.ShardResult:
    return batch.evaluate_shard(run, index)


def run_local(
    data: str,
    out: str | None = None,
    *,
    measures: Sequence[str] | None = None,
    period: str | None = None,
    valuesets: str | None = None,
    n_shards: int | None = None,
    workers: int | None = None,
    on_plan: Callable[[batch.RunPlan], None] | None = None,
    on_shard: Callable[[batch.ShardResult], None] | None = None,
) -> LocalRun:
    """plan -> evaluate_shard for every shard (in-process for one worker, else a spawn pool) -> reduce."""
    out = out or storage.join(data, "_results")
    workers = max(1, workers or os.cpu_count() or 1)
    if n_shards is None:
        n_shards = workers  # at least one shard per worker; plan() caps it at the number of buckets
    run = batch.plan(data, out, measures=measures, period=period, valuesets=valuesets, n_shards=n_shards)
    if on_plan is not None:
        on_plan(run)
    indices = range(len(run.shards))
    if workers == 1 or len(run.shards) == 1:
        for i in indices:
            result = batch.evaluate_shard(run, i)
            if on_shard is not None:
                on_shard(result)
    else:
        # spawn, not fork: polars' thread pool does not survive a fork. Split the cores between the workers
        # (children read POLARS_MAX_THREADS at spawn) instead of oversubscribing them.
        n = min(workers, len(run.shards))
        threads = str(max(1, (os.cpu_count() or 1) // n))
        previous = os.environ.get("POLARS_MAX_THREADS")
        os.environ.setdefault("POLARS_MAX_THREADS", threads)  # workers spawn lazily: keep it while they start
        try:
            with ProcessPoolExecutor(n, mp_context=mp.get_context("spawn")) as pool:
                futures = [pool.submit(_shard, run.to_dict(), i) for i in indices]
                for future in as_completed(futures):
                    result = future.result()
                    if on_shard is not None:
                        on_shard(result)
        finally:
            if previous is None:
                os.environ.pop("POLARS_MAX_THREADS", None)
    return LocalRun(run, batch.reduce(run))
