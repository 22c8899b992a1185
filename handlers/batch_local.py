"""The local executor: the batch functions on a process pool, so a laptop run and a Lambda run share code.

A shard that fails does not stop the others: every shard that can finish commits its outputs, then the run
fails naming the shards that did not. A rerun skips the shards already committed and completes the run.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from datasets import storage
from handlers import batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalRun:
    run: batch.RunPlan
    summary: batch.Summary


def _shard(run: dict[str, Any], index: int) -> batch.ShardResult:
    """One shard in a worker; errors cross the process boundary as text (some do not survive pickling)."""
    try:
        return batch.evaluate_shard(run, index)
    except Exception as exc:
        raise batch.ShardError(f"{type(exc).__name__}: {exc}") from None


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
    max_error_rate: float | None = None,
    as_of: str | None = None,
    resume: bool = True,
) -> LocalRun:
    """plan -> evaluate_shard for every shard (in-process for one worker, else a spawn pool) -> reduce.

    With ``resume`` (the default) shards whose outputs are already committed for this run id are not
    evaluated again (their bytes would be identical). Shard failures are collected, not raised on the first:
    ``batch.RunIncompleteError`` names them after every other shard has committed.
    """
    out = out or storage.join(data, "_results")
    workers = max(1, workers or os.cpu_count() or 1)
    if n_shards is None:
        n_shards = workers  # at least one shard per worker; plan() caps it at the number of buckets
    run = batch.plan(
        data,
        out,
        measures=measures,
        period=period,
        valuesets=valuesets,
        n_shards=n_shards,
        max_error_rate=max_error_rate,
        as_of=as_of,
    )
    if on_plan is not None:
        on_plan(run)
    indices = [i for i in range(len(run.shards)) if not (resume and batch.shard_done(run, i))]
    if len(indices) < len(run.shards):
        log.info("run %s: %d shards already committed", run.run_id, len(run.shards) - len(indices))
        if on_shard is not None:
            for i in sorted(set(range(len(run.shards))) - set(indices)):
                on_shard(_committed(run, i))
    failed: dict[int, str] = {}
    if not indices:
        pass
    elif workers == 1 or len(indices) == 1:
        for i in indices:
            try:
                result = batch.evaluate_shard(run, i)
            except Exception as exc:  # collected: the other shards still run and commit
                failed[i] = f"{type(exc).__name__}: {exc}"
                continue
            if on_shard is not None:
                on_shard(result)
    else:
        # spawn, not fork: polars' thread pool does not survive a fork. Split the cores between the workers
        # (children read POLARS_MAX_THREADS at spawn) instead of oversubscribing them.
        n = min(workers, len(indices))
        threads = str(max(1, (os.cpu_count() or 1) // n))
        previous = os.environ.get("POLARS_MAX_THREADS")
        os.environ.setdefault("POLARS_MAX_THREADS", threads)  # workers spawn lazily: keep it while they start
        try:
            with ProcessPoolExecutor(n, mp_context=mp.get_context("spawn")) as pool:
                futures = {pool.submit(_shard, run.to_dict(), i): i for i in indices}
                for future in as_completed(futures):
                    try:
                        result = future.result()
                    except (
                        BrokenProcessPool
                    ):  # a worker was killed: its shard (and queued ones) did not commit
                        failed[futures[future]] = "worker process died (killed or out of memory)"
                        continue
                    except batch.ShardError as exc:
                        failed[futures[future]] = str(exc)
                        continue
                    except Exception as exc:
                        failed[futures[future]] = f"{type(exc).__name__}: {exc}"
                        continue
                    if on_shard is not None:
                        on_shard(result)
        finally:
            if previous is None:
                os.environ.pop("POLARS_MAX_THREADS", None)
    if failed:
        detail = "; ".join(f"shard {i}: {why}" for i, why in sorted(failed.items()))
        raise batch.RunIncompleteError(
            f"run {run.run_id}: {len(failed)} of {len(run.shards)} shards failed, nothing published"
            f" (the others are committed; rerun to complete): {detail}"
        )
    return LocalRun(run, batch.reduce(run))


def _committed(run: batch.RunPlan, index: int) -> batch.ShardResult:
    """The result of a shard committed by an earlier attempt, from its counts document."""
    doc = batch.read_counts(run, index) or {}
    return batch.ShardResult(
        run.run_id,
        index,
        int(doc.get("patients", 0)),
        batch.subjects_path(run, index),
        batch.counts_path(run, index),
        int(doc.get("quarantined", 0)),
    )
