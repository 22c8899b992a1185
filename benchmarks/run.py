"""`make bench`: run the benchmarks and write benchmarks/results/*.json and benchmarks/results/summary.md.

Every figure is a measurement on this machine, never a test assertion. Each comparison runs side by side in one
process (floor vs engine, engine vs peer) so that the ratio survives a noisy shared machine; repetitions are
medians. Lakes are generated once under benchmarks/data/ (gitignored) with the project's synthetic generator.

    python -m benchmarks.run                                  # everything, default sizes
    python -m benchmarks.run --only floor scaling --floor-patients 100000 --sizes 10000 100000
    python -m benchmarks.run --summary-only                   # rebuild summary.md from the result files
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from benchmarks import PY, RESULTS, ROOT, run_child

STEPS = ("floor", "scaling", "reference", "fqm", "duckdb", "latency", "api", "cold")


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def summary() -> str:
    rows: list[tuple[str, str, str, str]] = []  # (figure, value, target, source)
    notes: list[str] = []
    for path in sorted(RESULTS.glob("floor_*.json")):
        f = json.loads(path.read_text())
        n = f["patients"]
        ph = f["engine_phases_median_s"]
        rows.append(
            (f"scan floor, library columns, {n:,} patients", f"{_fmt(f['floor_s'])} s", "-", path.name)
        )
        rows.append(
            (
                f"engine, full library ({len(f['measures'])} measures), {n:,} patients",
                f"{_fmt(f['engine_s'])} s (bind {_fmt(ph['bind_s'])}, events {_fmt(ph['materialize_events_s'])}, "
                f"measures {_fmt(ph['measures_collect_s'])}, concat/sort {_fmt(ph['concat_sort_s'])})",
                "<= 10 s at 1M",
                path.name,
            )
        )
        rows.append(
            (
                f"ratio engine / floor, {n:,} patients",
                f"{_fmt(f['ratio_engine_over_floor'])}x",
                "<= 2.5x",
                path.name,
            )
        )
        if f.get("skipped_measures"):
            notes.append(
                f"{path.name}: measures skipped (do not compile): {', '.join(f['skipped_measures'])}"
            )
    s = _load("scaling.json")
    if s:
        for r in s["rows"]:
            rows.append(
                (
                    f"scaling, full library, {r['patients']:,} patients",
                    f"wall {_fmt(r['wall_s'])} s, evaluate {_fmt(r['evaluate_s'])} s, "
                    f"{_fmt(r['patients_per_s'])} patients/s, peak RSS {_fmt(r['peak_rss_gib'])} GiB "
                    f"(runs {r['runs_evaluate_s']})",
                    "1M: <= 10 s, < 2 GB" if r["patients"] == 1_000_000 else "-",
                    "scaling.json",
                )
            )
    d = _load("duckdb_peer.json")
    if d:
        if d.get("skipped"):
            rows.append(
                ("DuckDB SQL peer", "not run: " + d["skipped"], "ours/DuckDB <= 1.0", "duckdb_peer.json")
            )
        else:
            # the latest run, and the latest at each other lake size (``by_patients``)
            runs = {**d.get("by_patients", {}), str(d["patients"]): d}
            for n, run in sorted(runs.items(), key=lambda kv: int(kv[0])):
                per_query = ", ".join(
                    f"{m} {_fmt(s)}" for m, s in run.get("duckdb_per_measure_median_s", {}).items()
                )
                rows.append(
                    (
                        f"ours / DuckDB ({', '.join(d['measures'])}), {int(n):,} patients",
                        f"{_fmt(run['ratio_ours_over_duckdb'])} "
                        f"(ours {_fmt(run['ours_s'])} s, DuckDB {_fmt(run['duckdb_s'])} s"
                        + (f": {per_query}" if per_query else "")
                        + ")"
                        + (
                            f"; CPU seconds {_fmt(run['ratio_cpu_ours_over_duckdb'])}"
                            if "ratio_cpu_ours_over_duckdb" in run
                            else ""
                        )
                        + f"; mismatching patients {run['mismatches']}",
                        "<= 1.0",
                        "duckdb_peer.json",
                    )
                )
    q = _load("fqm_peer.json")
    if q:
        if q.get("skipped"):
            rows.append(("fqm-execution peer", "not run: " + q["skipped"], ">= 10,000x", "fqm_peer.json"))
        else:
            rows.append(
                (
                    f"fqm-execution {q['fqm_execution']} CMS125, {q['sample']:,}-patient sample",
                    f"{_fmt(q['fqm_patients_per_s'], 1)} patients/s ({_fmt(q['fqm_calc_s'])} s in calculate)",
                    "-",
                    "fqm_peer.json",
                )
            )
            rows.append(
                (
                    "ours / fqm-execution throughput (CMS125)",
                    f"{_fmt(q['ratio_engine_over_fqm_throughput'], 0)}x over a "
                    f"{q['engine_lake_patients']:,}-patient lake ({_fmt(q['engine_patients_per_s'])} patients/s); "
                    f"{_fmt(q['ratio_engine_sample_over_fqm_throughput'], 0)}x on the sample alone; "
                    f"mismatching patients {q['agreement']['mismatches']} of {q['agreement']['compared']}",
                    ">= 10,000x",
                    "fqm_peer.json",
                )
            )
    r = _load("reference_peer.json")
    if r:
        a = sum(v["mismatches"] for v in r["agreement"].values())
        rows.append(
            (
                f"reference interpreter ({', '.join(r['measures'])}), {r['sample']:,}-patient sample",
                f"{_fmt(r['reference_patient_measures_per_s'], 1)} patient-measures/s; ours "
                f"{_fmt(r['ratio_engine_over_reference_throughput'], 1)}x "
                f"({r['engine_lake_patients']:,}-patient lake), "
                f"{_fmt(r['ratio_engine_sample_over_reference_throughput'], 1)}x (sample alone); mismatches {a}",
                "-",
                "reference_peer.json",
            )
        )
    api = _load("api_latency.json")
    if api:
        for name, sc in api.get("scenarios", {}).items():
            seq = sc.get("sequential", {})
            conc = next((v for k, v in sc.items() if k.startswith("concurrency")), {})
            rows.append(
                (
                    f"API {name} (loopback, 1 uvicorn worker)",
                    f"p50 {_fmt(seq.get('p50_ms'))} / p99 {_fmt(seq.get('p99_ms'))} ms sequential; "
                    f"p50 {_fmt(conc.get('p50_ms'))} / p99 {_fmt(conc.get('p99_ms'))} ms at concurrency",
                    "-",
                    "api_latency.json (benchmarks/api_load.py)",
                )
            )
    lat = _load("latency.json")
    if lat and "shard" in lat:
        sh = lat["shard"]
        rows.append(
            (
                f"one Lambda shard: {sh['patients']:,} patients ({sh['buckets']} of 64 buckets of the 1M lake), "
                "full library",
                f"evaluate_shard {_fmt(sh['shard_s_median'])} s (+ compile {_fmt(sh['compile_s_median'])} s, "
                f"import {_fmt(sh['import_s_median'])} s), peak RSS {_fmt(sh['peak_rss_gib_max'])} GiB",
                "< 1.5 s, < 1 GB (50k patients)",
                "latency.json (benchmarks/latency.py)",
            )
        )
    if lat and "single_patient" in lat:
        for name, target in (("one_measure", "p50 < 2 ms"), ("library", "p50 < 10 ms")):
            sp = lat["single_patient"][name]
            rows.append(
                (
                    f"single patient in process, {name.replace('_', ' ')} ({sp['measures']} "
                    f"measure{'s' if sp['measures'] > 1 else ''}, plans prebuilt, no Bundle flattening)",
                    f"p50 {_fmt(sp['p50_ms'])} / p95 {_fmt(sp['p95_ms'])} / p99 {_fmt(sp['p99_ms'])} ms",
                    target,
                    "latency.json (benchmarks/latency.py)",
                )
            )
    cold = _load("cold_import.json")
    if cold:
        res = cold.get("results", {})
        parts = [f"{k}: median {_fmt(v.get('median_s'))} s" for k, v in res.items() if isinstance(v, dict)]
        rows.append(
            (
                f"cold import of {cold.get('module', '?')} (Lambda shard start-up, warm page cache)",
                "; ".join(parts) or "-",
                "-",
                "cold_import.json (benchmarks/cold_import.py)",
            )
        )
    machine = None
    for name in ("scaling.json", "fqm_peer.json", "reference_peer.json"):
        m = _load(name)
        if m and m.get("machine"):
            machine = m["machine"]
            break
    lines = [
        "# Benchmark summary",
        "",
        "Generated by `python -m benchmarks.run` from benchmarks/results/*.json; figures, not tests.",
        "",
    ]
    if machine:
        lines += [
            f"Machine: {machine.get('cpus')} CPUs ({machine.get('cpu_model')}), {machine.get('mem_gib')} GiB, "
            f"Python {machine.get('python')}, polars {machine.get('polars')}, "
            f"POLARS_MAX_THREADS={machine.get('POLARS_MAX_THREADS')}.",
            "",
        ]
    lines += ["| figure | value | target | source |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.md").write_text(text)
    return text


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=STEPS, default=list(STEPS))
    p.add_argument("--floor-patients", type=int, default=1_000_000)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument(
        "--peer-patients", type=int, default=100_000, help="lake the per-patient sample is drawn from"
    )
    p.add_argument("--sample", type=int, default=2000, help="patients for fqm-execution and the reference")
    p.add_argument("--fqm-repeat", type=int, default=1, help="fqm-execution takes minutes per 2,000 patients")
    p.add_argument("--duckdb-patients", type=int, default=1_000_000)
    p.add_argument(
        "--profile", action="store_true", help="attribute costs inside the engine phases (floor step)"
    )
    p.add_argument("--summary-only", action="store_true")
    args = p.parse_args(argv)
    if not args.summary_only:
        if "floor" in args.only:
            from benchmarks import floor

            floor.main(
                ["--patients", str(args.floor_patients), "--repeat", str(args.repeat)]
                + (["--profile"] if args.profile else [])
            )
        if "scaling" in args.only:
            from benchmarks import scaling

            scaling.main(["--sizes", *map(str, args.sizes), "--repeat", str(args.repeat)])
        if "reference" in args.only:
            from benchmarks import reference_peer

            reference_peer.main(
                [
                    "--patients",
                    str(args.peer_patients),
                    "--sample",
                    str(args.sample),
                    "--repeat",
                    str(args.repeat),
                ]
            )
        if "fqm" in args.only:
            from benchmarks import fqm_peer

            fqm_peer.main(
                [
                    "--patients",
                    str(args.peer_patients),
                    "--sample",
                    str(args.sample),
                    "--repeat",
                    str(args.fqm_repeat),
                ]
            )
        if "duckdb" in args.only:
            try:
                from benchmarks import duckdb_peer
            except ImportError as exc:
                from benchmarks import write_json

                write_json(
                    "duckdb_peer.json",
                    {
                        "skipped": "the hand-written DuckDB SQL for CMS125/CMS122/CMS165 is "
                        f"not delivered yet (benchmarks/duckdb_peer.py absent: {exc})"
                    },
                )
            else:
                duckdb_peer.main(["--patients", str(args.duckdb_patients), "--repeat", str(args.repeat)])
        if "latency" in args.only:
            from benchmarks import latency

            latency.main([])
        for step, script, extra in (
            ("api", "api_load.py", ["--requests", "200", "--concurrency", "2"]),
            ("cold", "cold_import.py", []),
        ):
            if step in args.only:  # scripts with their own command lines, run as the docs show them
                run_child([PY, str(ROOT / "benchmarks" / script), *extra])
    print(summary())


if __name__ == "__main__":
    main()
