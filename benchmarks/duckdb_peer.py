"""DuckDB SQL peer: CMS125, CMS122 and CMS165 written by hand in DuckDB SQL (benchmarks/sql/*.sql), in the style of
a warehouse measure mart, over the same Parquet lake as the engine; per-patient agreement and time, side by side
in one process.

* ours: the engine's phases from lake to per-patient result frame, timed as benchmarks.floor times them
  (``engine_phases``: bind, materialize_events, lower + collect, concat) for the three measures' plans.
* DuckDB: for each measure, its SQL from the Parquet files to the per-patient result, fetched as a polars frame
  (``.pl()``), one query per measure; the time is the sum of the three. The lake is read through views
  (``lake_views``) and value sets from a ``valueset(valueset, system, code)`` table loaded once with the
  project's loader (``engine.library.load_valuesets``), outside the timing, as the engine's compile is. What the
  measures share (the concept dimension, the staging views, the library definitions as table macros of the
  period) is written once in ``sql/common.sql``, created with each connection and expanded into each query.

Both run with ``--threads`` threads (POLARS_MAX_THREADS, ``SET threads``), alternating, ``--repeat`` times
(medians). Every population of every patient is compared; mismatches are counted per population and the first
patient ids that differ are listed.

    python -m benchmarks.duckdb_peer --patients 100000 --repeat 3
    python -m benchmarks.run --only duckdb --duckdb-patients 1000000
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import lake, library_plans, machine, median, write_json

if TYPE_CHECKING:
    import duckdb
    import polars as pl

MEASURES = ("CMS122", "CMS125", "CMS165")
SQL_DIR = Path(__file__).resolve().parent / "sql"
POPULATIONS = ("initial_population", "denominator", "denominator_exclusion", "numerator")
# the tables the three queries read; a table the lake lacks becomes an empty view with the canonical schema
TABLES = (
    "patient",
    "encounter",
    "condition",
    "procedure",
    "observation",
    "observation_component",
    "medication_request",
    "service_request",
    "device_request",
)


def sql_text(measure: str) -> str:
    return (SQL_DIR / f"{measure.lower()}.sql").read_text()


def _literal(text: str) -> str:
    """A SQL string literal (quotes doubled): the lake path is data, never SQL."""
    return "'" + text.replace("'", "''") + "'"


def connect(threads: int = 2) -> duckdb.DuckDBPyConnection:
    import duckdb

    con = duckdb.connect()  # in memory: nothing is cached between runs but what DuckDB keeps itself
    con.execute(f"SET threads = {int(threads)}")
    con.execute((SQL_DIR / "session.sql").read_text())  # time zone, the local_date macro
    return con


def lake_views(con: duckdb.DuckDBPyConnection, root: str | Path) -> None:
    """One view per canonical table over its hive partitions (``<root>/<table>/bucket=NNNN/*.parquet``)."""
    from datasets.schema import empty_frame
    from datasets.source import ParquetSource

    source = ParquetSource(str(root))
    for table in TABLES:
        if source.has_table(table):
            files = _literal(f"{Path(root).resolve()}/{table}/*/*.parquet")
            con.execute(
                f"CREATE OR REPLACE VIEW {table} AS "
                f"SELECT * FROM read_parquet({files}, hive_partitioning = false)"
            )
        else:
            con.register("_empty", empty_frame(table).drop("bucket").to_arrow())
            con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM _empty")
            con.unregister("_empty")


def load_valueset_table(con: duckdb.DuckDBPyConnection) -> int:
    """``valueset(valueset, system, code)``: every expansion of the project's value sets, keyed by canonical URL,
    systems canonicalised as the engine's compiler does (engine.systems.canonical_system)."""
    import polars as pl

    from engine.library import load_valuesets
    from engine.systems import canonical_system

    rows = sorted(
        {
            (url, canonical_system(system), code)
            for url, vs in load_valuesets().items()
            for system, code in vs.codes
        }
    )
    frame = pl.DataFrame(
        rows, schema={"valueset": pl.String, "system": pl.String, "code": pl.String}, orient="row"
    )
    con.register("_valueset", frame.to_arrow())
    con.execute("CREATE OR REPLACE TABLE valueset AS SELECT * FROM _valueset")
    con.unregister("_valueset")
    return len(rows)


def prepare(root: str | Path, threads: int = 2) -> duckdb.DuckDBPyConnection:
    con = connect(threads)
    lake_views(con, root)
    load_valueset_table(con)
    # the models the measures share (concepts, staging views, library macros of the period): they bind to the
    # lake views and the valueset table, so they come after them; nothing is computed until a measure runs
    con.execute((SQL_DIR / "common.sql").read_text())
    return con


def run_sql(con: duckdb.DuckDBPyConnection, measure: str, period: tuple[date, date]) -> pl.DataFrame:
    """The measure's per-patient populations from the lake (one query, fetched as a polars frame)."""
    return con.execute(sql_text(measure), {"period_start": period[0], "period_end": period[1]}).pl()


def run_duckdb(
    con: duckdb.DuckDBPyConnection, periods: dict[str, tuple[date, date]]
) -> tuple[dict[str, pl.DataFrame], dict[str, float]]:
    frames: dict[str, pl.DataFrame] = {}
    seconds: dict[str, float] = {}
    for measure, period in periods.items():
        t = time.perf_counter()
        frames[measure] = run_sql(con, measure, period)
        seconds[measure] = time.perf_counter() - t
    return frames, seconds


def compare(ours: pl.DataFrame, theirs: pl.DataFrame, examples: int = 10) -> dict[str, Any]:
    """Per-patient agreement of two (patient_id + populations) frames: mismatching patients, per population."""
    import polars as pl

    joined = ours.select("patient_id", *POPULATIONS).join(
        theirs.select("patient_id", *POPULATIONS), on="patient_id", how="full", suffix="_sql", coalesce=True
    )
    differs = {p: pl.col(p).ne_missing(pl.col(f"{p}_sql")) for p in POPULATIONS}
    flagged = joined.with_columns(**{f"_{p}": e for p, e in differs.items()})
    bad = flagged.filter(pl.any_horizontal(f"_{p}" for p in POPULATIONS)).sort("patient_id")
    return {
        "compared": joined.height,
        "mismatches": bad.height,
        "per_population": {p: int(flagged[f"_{p}"].sum()) for p in POPULATIONS},
        "examples": [
            {
                "patient_id": row["patient_id"],
                "ours_vs_duckdb": {
                    p: [row[p], row[f"{p}_sql"]] for p in POPULATIONS if row[p] != row[f"{p}_sql"]
                },
            }
            for row in bad.head(examples).iter_rows(named=True)
        ],
    }


def counts(frame: pl.DataFrame) -> dict[str, int]:
    return {p: int(frame[p].fill_null(False).sum()) for p in POPULATIONS}


def per_measure(subjects: pl.DataFrame, measure: str) -> pl.DataFrame:
    import polars as pl

    return subjects.filter(pl.col("measure_id") == measure)


def _by_patients(out: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of this run beside those of the previous runs at other lake sizes (one result file;
    the top level is the latest run)."""
    import json

    from benchmarks import RESULTS

    path = RESULTS / "duckdb_peer.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    keep = (
        "ours_s",
        "duckdb_s",
        "ratio_ours_over_duckdb",
        "ratio_cpu_ours_over_duckdb",
        "mismatches",
        "duckdb_per_measure_median_s",
        "contention",
        "command",
    )
    runs = {k: v for k, v in previous.get("by_patients", {}).items() if k != str(out["patients"])}
    optional = ("ours_alone_per_measure_median_s", "ratio_ours_alone_over_duckdb_per_measure")
    runs[str(out["patients"])] = {k: out[k] for k in (*keep, *optional) if k in out}
    return dict(sorted(runs.items(), key=lambda kv: int(kv[0])))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patients", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="DuckDB threads and POLARS_MAX_THREADS")
    p.add_argument(
        "--per-measure",
        action="store_true",
        help="also time the engine on each measure alone (DuckDB runs one query per measure)",
    )
    args = p.parse_args(argv)
    # polars sizes its pool once, at import: effective only when polars is not imported yet (recorded below)
    os.environ.setdefault("POLARS_MAX_THREADS", str(args.threads))

    try:
        import duckdb
    except ImportError as exc:
        out: dict[str, Any] = {"skipped": f"duckdb is not installed ({exc}); pip install -e '.[dev]'"}
        write_json("duckdb_peer.json", out)
        return out
    import polars as pl

    from benchmarks.floor import engine_phases
    from datasets.source import ParquetSource

    root = lake(args.patients)
    source = ParquetSource(str(root))
    plans, skipped = library_plans(list(MEASURES))
    if skipped:
        raise SystemExit(f"measures do not compile: {skipped}")
    periods = {plan.measure_id: (plan.period_start, plan.period_end) for plan in plans}
    con = prepare(root, args.threads)

    load_before = os.getloadavg()
    cpu_before = time.process_time()
    wall_before = time.perf_counter()
    ours_runs: list[dict[str, float]] = []
    ours_alone: list[dict[str, float]] = []
    duck_runs: list[dict[str, float]] = []
    subjects = frames = None
    cpu: dict[str, list[float]] = {"ours": [], "duckdb": []}  # process CPU seconds, all threads
    for i in range(args.repeat):
        c = time.process_time()
        phases, subjects, _ = engine_phases(plans, source)
        cpu["ours"].append(time.process_time() - c)
        ours_runs.append(phases)
        c = time.process_time()
        frames, seconds = run_duckdb(con, periods)
        cpu["duckdb"].append(time.process_time() - c)
        duck_runs.append(seconds)
        if args.per_measure:
            ours_alone.append(
                {plan.measure_id: engine_phases([plan], source)[0]["total_s"] for plan in plans}
            )
        print(
            f"rep {i}: ours {phases['total_s']:.2f}s duckdb {sum(seconds.values()):.2f}s "
            + " ".join(f"{m} {s:.2f}s" for m, s in seconds.items()),
            flush=True,
        )
    assert subjects is not None and frames is not None
    # the machine is shared: how loaded it was, and the CPU this process got (of threads x wall)
    contention = {
        "load_average_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "process_cpu_share_of_threads": round(
            (time.process_time() - cpu_before) / (args.threads * (time.perf_counter() - wall_before)), 2
        ),
    }
    agreement = {m: compare(per_measure(subjects, m), frames[m]) for m in periods}
    populations = {
        m: {"ours": counts(per_measure(subjects, m)), "duckdb": counts(frames[m])} for m in periods
    }
    # populations the SQL does not write must be empty on our side too (none of the three has them)
    others = [c for c in ("denominator_exception", "numerator_exclusion") if c in subjects.columns]
    extra_true = {c: int(subjects[c].fill_null(False).sum()) for c in others}
    ours_s = median([r["total_s"] for r in ours_runs])
    duck_s = median([sum(r.values()) for r in duck_runs])
    mismatches = sum(a["mismatches"] for a in agreement.values())
    out = {
        "command": f"python -m benchmarks.duckdb_peer --patients {args.patients} --repeat {args.repeat} "
        f"--threads {args.threads}" + (" --per-measure" if args.per_measure else ""),
        "machine": machine(),
        "duckdb": duckdb.__version__,
        "threads": {"duckdb": args.threads, "polars_pool": pl.thread_pool_size()},
        "contention": contention,
        "lake": str(root.relative_to(root.parents[2])),
        "patients": args.patients,
        "measures": sorted(periods),
        "periods": {m: [str(a), str(b)] for m, (a, b) in periods.items()},
        "ours_s": ours_s,
        "ours_runs_s": [round(r["total_s"], 3) for r in ours_runs],
        "ours_phases_median_s": {k: median([r[k] for r in ours_runs]) for k in ours_runs[0]},
        "duckdb_s": duck_s,
        "duckdb_runs_s": [round(sum(r.values()), 3) for r in duck_runs],
        "duckdb_per_measure_median_s": {m: median([r[m] for r in duck_runs]) for m in periods},
        "ratio_ours_over_duckdb": round(ours_s / duck_s, 2),
        # each repetition runs both side by side: the median of the paired ratios, and CPU seconds (less
        # sensitive than wall time to other processes on a shared machine)
        "ratio_per_repetition_median": median(
            [r["total_s"] / sum(d.values()) for r, d in zip(ours_runs, duck_runs, strict=True)]
        ),
        "ours_cpu_s": median(cpu["ours"]),
        "duckdb_cpu_s": median(cpu["duckdb"]),
        "ratio_cpu_ours_over_duckdb": round(median(cpu["ours"]) / median(cpu["duckdb"]), 2),
        **(
            {
                "ours_alone_per_measure_median_s": {m: median([r[m] for r in ours_alone]) for m in periods},
                "ratio_ours_alone_over_duckdb_per_measure": {
                    m: round(median([r[m] for r in ours_alone]) / median([r[m] for r in duck_runs]), 2)
                    for m in periods
                },
            }
            if ours_alone
            else {}
        ),
        "mismatches": mismatches,
        "agreement": agreement,
        "populations": populations,
        "ours_other_populations_true": extra_true,
        "sql": {m: f"benchmarks/sql/{m.lower()}.sql" for m in periods},
    }
    out["by_patients"] = _by_patients(out)
    write_json("duckdb_peer.json", out)
    if mismatches:
        print(f"WARNING: {mismatches} patient-measures differ between the engine and the SQL", flush=True)
    return out


if __name__ == "__main__":
    import json

    r = main()
    print(json.dumps({k: v for k, v in r.items() if k not in ("machine", "agreement")}, indent=1))
