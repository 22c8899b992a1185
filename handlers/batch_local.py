"""The local executor: the batch functions on a process pool, so a laptop run and a Lambda run share code.

A shard that fails does not stop the others: every shard that can finish commits its outputs, then the run
fails naming the shards that did not. A rerun skips the shards already committed and completes the run.

A worker process that dies (SIGKILL, the out-of-memory killer) breaks the whole pool: every shard still running
or queued fails with it, not only the one that died. Those shards are then run again one at a time, each in a
fresh process of its own, so the shard that kills its worker is named (with the signal) and the others commit.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
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


def _isolated(run: dict[str, Any], index: int, conn: Any) -> None:
    """One shard in a process of its own; the outcome goes back over ``conn`` (nothing if the process dies)."""
    try:
        outcome: tuple[str, Any] = ("ok", batch.evaluate_shard(run, index))
    except Exception as exc:
        outcome = ("error", f"{type(exc).__name__}: {exc}")
    conn.send(outcome)
    conn.close()


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"worker process killed by {name} (out of memory, or killed); its outputs were not committed"
    return f"worker process died (exit code {exitcode}); its outputs were not committed"


def _run_alone(run: batch.RunPlan, index: int) -> batch.ShardResult | str:
    """The shard in a fresh spawned process: its result, or why it failed (naming a signal that killed it)."""
    ctx = mp.get_context("spawn")
    reader, writer = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_isolated, args=(run.to_dict(), index, writer), daemon=True)
    process.start()
    writer.close()  # only the child holds the sending end: its death ends recv() with EOFError
    try:
        status, value = reader.recv()
    except EOFError:
        status, value = "died", None
    finally:
        reader.close()
        process.join()
    if status == "ok" and isinstance(value, batch.ShardResult):
        return value
    return str(value) if status == "error" else _death(process.exitcode)


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
    broken: list[int] = []  # shards lost with a pool whose worker died (the culprit is among them)
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
                    except BrokenProcessPool:  # a worker died: every running or queued shard fails with it
                        broken.append(futures[future])
                        continue
                    except batch.ShardError as exc:
                        failed[futures[future]] = str(exc)
                        continue
                    except Exception as exc:
                        failed[futures[future]] = f"{type(exc).__name__}: {exc}"
                        continue
                    if on_shard is not None:
                        on_shard(result)
            for i in sorted(broken):  # one at a time, alone: only the shard that kills its worker fails
                log.warning("run %s shard %d: the worker pool broke; running the shard alone", run.run_id, i)
                outcome = _run_alone(run, i)
                if isinstance(outcome, batch.ShardResult):
                    if on_shard is not None:
                        on_shard(outcome)
                else:
                    failed[i] = outcome
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
