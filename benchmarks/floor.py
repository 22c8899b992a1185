"""Scan floor vs the engine's full library evaluation over the same lake, side by side in one process.

* floor: for every table the library reads, scan exactly the union of ``plan.columns`` (``Requirements.of``,
  i.e. the same projection ``bind`` uses, ``patient`` included) and materialise it on the streaming engine,
  one table at a time (so the floor's memory is the largest table, not the sum).
* engine: the phases of ``engine.evaluate.evaluate`` called one by one, so each is timed: ``bind`` (scan + explode
  + tag + semi-join, all tables in one streaming collect_all), ``materialize_events`` (named event sets, layer by
  layer, in-memory), ``lower`` + collect_all (per-measure subject frames), concat + sort.
  The engine run also checks that its subjects equal ``evaluate()``'s on the first repetition.

Floor and engine alternate ``--repeat`` times (medians reported). With ``--profile`` the costs inside each phase are
attributed afterwards (per table scan, each named event set collected alone, each measure's lower collected alone).

    python -m benchmarks.floor --patients 1000000 --repeat 3 --profile
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import polars as pl

from benchmarks import lake, library_plans, machine, median, write_json


def required_columns(plans: Sequence[Any]) -> dict[str, list[str]]:
    from engine.evaluate import Requirements

    req = Requirements.of(plans)
    cols = req.lake_columns()  # what bind reads: views come from their lake table's scan
    # bind always reads these patient columns (and coverage when a plan reports payer)
    cols["patient"] = sorted(set(req.columns.get("patient", ())) | {"patient_id", "gender", "birth_date"})
    if "coverage" in req.full:
        cols["coverage"] = sorted(set(cols.get("coverage", [])) | {"patient_id", "type"})
    return cols


def floor(source: Any, columns: dict[str, list[str]]) -> dict[str, Any]:
    per_table: dict[str, float] = {}
    rows: dict[str, int] = {}
    t0 = time.perf_counter()
    for table, cols in sorted(columns.items()):
        if not source.has_table(table):
            continue
        t = time.perf_counter()
        df = source.scan(table, cols).collect(engine="streaming")
        per_table[table] = round(time.perf_counter() - t, 3)
        rows[table] = df.height
        del df
    return {"total_s": time.perf_counter() - t0, "per_table_s": per_table, "rows": rows}


def engine_phases(plans: Sequence[Any], source: Any) -> tuple[dict[str, float], pl.DataFrame, Any]:
    from engine.evaluate import EvaluationConfig, bind, materialize_events
    from engine.lower import lower

    config = EvaluationConfig()
    t0 = time.perf_counter()
    bound = bind(plans, source, streaming=config.streaming)
    t1 = time.perf_counter()
    materialize_events(plans, bound, config)
    t2 = time.perf_counter()
    lazies = [lower(plan, bound, config.period_for(plan)) for plan in plans]
    t3 = time.perf_counter()
    parts = pl.collect_all(lazies, engine="in-memory")
    t4 = time.perf_counter()
    subjects = pl.concat(parts, how="diagonal_relaxed")  # as evaluate(): parts come ordered
    t5 = time.perf_counter()
    phases = {
        "bind_s": t1 - t0,
        "materialize_events_s": t2 - t1,
        "lower_build_s": t3 - t2,
        "measures_collect_s": t4 - t3,
        "concat_sort_s": t5 - t4,
        "total_s": t5 - t0,
    }
    return phases, subjects, bound


def profile(plans: Sequence[Any], source: Any) -> dict[str, Any]:
    """Attribute the cost inside each phase (one run; each item collected alone, so sums exceed the phase)."""
    from engine.evaluate import EvaluationConfig, bind
    from engine.lower import Bound, Lowerer, lower
    from engine.plan import NamedEventsIR, RetrieveIR, UnionIR

    config = EvaluationConfig()
    bound = bind(plans, source)
    sizes = {
        "rows": {t: lf.select(pl.len()).collect().item() for t, lf in bound.rows.items()},
        "tags": {f"{t}.{c}": lf.select(pl.len()).collect().item() for (t, c), lf in bound.tags.items()},
    }
    # bind per table: a bind restricted to the requirements of one table is not expressible without editing
    # the engine; approximate it by the explode+join of each tagged column alone, per table.
    from engine.evaluate import Requirements, _tag_frame

    req = Requirements.of(plans)
    membership = req.membership_frame()
    tag_cost: dict[str, float] = {}
    for table, column in sorted(req.tags | req.attr_tags):
        if not source.has_table(table):
            continue
        base = source.scan(table, sorted(req.columns[table])).with_row_index("_row")
        t = time.perf_counter()
        _tag_frame(base, column, membership).collect(engine="streaming")
        tag_cost[f"{table}.{column}"] = round(time.perf_counter() - t, 3)

    # named event sets, each collected alone from the bound (no materialised inputs: the cost of its pipeline)
    events: list[dict[str, Any]] = []
    seen: set[Any] = set()
    for plan in plans:
        period = config.period_for(plan)
        for name, node in plan.defines:
            if isinstance(node, (RetrieveIR, UnionIR, NamedEventsIR)) and (node, period) not in seen:
                seen.add((node, period))
                fresh = Bound(bound.rows, bound.tags, bound.patients, bound.code_keys)
                lf = Lowerer(plan, fresh, period).events(node)
                t = time.perf_counter()
                n = lf.collect(engine="in-memory").height
                events.append(
                    {"define": f"{plan.measure_id}:{name}", "s": round(time.perf_counter() - t, 4), "rows": n}
                )
    events.sort(key=lambda e: -e["s"])

    # per measure, with the named event sets materialised as evaluate() does
    from engine.evaluate import materialize_events

    materialize_events(plans, bound, config)
    measures: dict[str, dict[str, float]] = {}
    for plan in plans:
        t = time.perf_counter()
        lf = lower(plan, bound, config.period_for(plan))
        t_build = time.perf_counter() - t
        t = time.perf_counter()
        lf.collect(engine="in-memory")
        measures[plan.measure_id] = {
            "build_s": round(t_build, 4),
            "collect_s": round(time.perf_counter() - t, 3),
        }
    return {
        "sizes": sizes,
        "tag_alone_s": tag_cost,
        "event_sets_top": events[:25],
        "n_event_sets": len(events),
        "event_sets_sum_s": round(sum(e["s"] for e in events), 3),
        "measures_alone": measures,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patients", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args(argv)

    from datasets.source import ParquetSource
    from engine import EvaluationConfig, evaluate

    root = lake(args.patients)
    source = ParquetSource(str(root))
    t = time.perf_counter()
    plans, skipped = library_plans()
    compile_s = time.perf_counter() - t
    columns = required_columns(plans)
    floors: list[dict[str, Any]] = []
    engines: list[dict[str, float]] = []
    checked = None
    for i in range(args.repeat):
        floors.append(floor(source, columns))
        phases, subjects, _ = engine_phases(plans, source)
        engines.append(phases)
        if i == 0:
            ref = evaluate(plans, source, EvaluationConfig()).subjects
            checked = ref.equals(subjects)
            n_subjects = subjects.height
        del subjects
        print(f"rep {i}: floor {floors[-1]['total_s']:.2f}s engine {phases['total_s']:.2f}s", flush=True)
    floor_med = median([f["total_s"] for f in floors])
    eng = {k: median([e[k] for e in engines]) for k in engines[0]}
    out: dict[str, Any] = {
        "command": f"python -m benchmarks.floor --patients {args.patients} --repeat {args.repeat}"
        + (" --profile" if args.profile else ""),
        "machine": machine(),
        "lake": str(root.relative_to(root.parents[2])),
        "patients": args.patients,
        "measures": [pl_.measure_id for pl_ in plans],
        "skipped_measures": skipped,
        "compile_library_s": round(compile_s, 3),
        "columns": columns,
        "floor_s": floor_med,
        "floor_runs_s": [round(f["total_s"], 3) for f in floors],
        "floor_per_table_s": floors[-1]["per_table_s"],
        "floor_rows": floors[-1]["rows"],
        "engine_s": eng["total_s"],
        "engine_runs_s": [round(e["total_s"], 3) for e in engines],
        "engine_phases_median_s": eng,
        "ratio_engine_over_floor": round(eng["total_s"] / floor_med, 2),
        "phases_equal_evaluate": checked,
        "subjects_rows": n_subjects,
    }
    if args.profile:
        out["profile"] = profile(plans, source)
    write_json(f"floor_{args.patients}.json", out)
    return out


if __name__ == "__main__":
    import json

    r = main()
    print(json.dumps({k: v for k, v in r.items() if k not in ("columns", "profile", "machine")}, indent=1))
