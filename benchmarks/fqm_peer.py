"""fqm-execution (Node) on the official CMS125 measure bundle vs our engine, patient by patient, and throughput.

The sample (first ``--sample`` patients by id of the ``--patients`` lake) is exported with
``datasets.fhir.export.export_patient_bundles`` to NDJSON (one collection Bundle per line) under benchmarks/data/,
then ``node benchmarks/peers/fqm_runner.js`` computes the populations with the official ELM and ValueSets of
/work/shared/data/ecqm/CMS125/measure-bundle.json (read in place). fqm-execution is timed inside the runner on
``Calculator.calculate`` only (chunks of 250 patients, ELM cached: no Node start-up, no JSON parsing of the
sample); ours on ``evaluate`` of CMS125 over the whole lake (batch throughput) and over the sample alone.

Requires ``npm install`` in benchmarks/peers (node_modules is gitignored); skipped with a note otherwise.

    python -m benchmarks.fqm_peer --patients 100000 --sample 2000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import DATA, ROOT, lake, machine, median, write_json
from benchmarks.reference_peer import POPS, compare, engine_results, frame_source_results, sample_tables

PEERS = ROOT / "benchmarks" / "peers"
BUNDLE = Path(os.environ.get("ECQM_DIR", "/work/shared/data/ecqm")) / "CMS125" / "measure-bundle.json"
FQM_POPS = {
    "initial-population": "initial_population",
    "denominator": "denominator",
    "denominator-exclusion": "denominator_exclusion",
    "numerator": "numerator",
}


def export_sample(tables: dict[str, Any], path: Path) -> int:
    from datasets.fhir.export import export_patient_bundles

    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w") as f:
        for bundle in export_patient_bundles(tables):
            f.write(json.dumps(bundle, separators=(",", ":"), default=str) + "\n")
            n += 1
    return n


def run_fqm(ndjson: Path) -> dict[str, Any]:
    t = time.perf_counter()
    proc = subprocess.run(
        ["node", str(PEERS / "fqm_runner.js"), str(BUNDLE), str(ndjson)],
        capture_output=True,
        text=True,
        check=True,
        cwd=PEERS,
    )
    out = json.loads(proc.stdout)
    out["process_s"] = time.perf_counter() - t
    out["results"] = {
        pid: {FQM_POPS[k]: v for k, v in pops.items() if k in FQM_POPS}
        for pid, pops in out["results"].items()
    }
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patients", type=int, default=100_000)
    p.add_argument("--sample", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    if shutil.which("node") is None or not (PEERS / "node_modules" / "fqm-execution").exists():
        out = {
            "skipped": "node or benchmarks/peers/node_modules/fqm-execution missing: run `npm install` in "
            "benchmarks/peers"
        }
        write_json("fqm_peer.json", out)
        return out
    root = str(lake(args.patients))
    tables = sample_tables(root, args.sample)
    ids = set(tables["patient"]["patient_id"])
    ndjson = DATA / f"fqm_sample_{args.patients}_{args.sample}.ndjson"
    t = time.perf_counter()
    exported = export_sample(tables, ndjson)
    export_s = time.perf_counter() - t
    fqm_s, fqm_proc_s, eng_s, small_s = [], [], [], []
    for _ in range(args.repeat):
        fqm = run_fqm(ndjson)
        ours, t_eng = engine_results(root, ["CMS125"], ids)
        _, t_small = frame_source_results(tables, ["CMS125"])
        fqm_s.append(fqm["calc_s"])
        fqm_proc_s.append(fqm["process_s"])
        eng_s.append(t_eng)
        small_s.append(t_small)
    agreement = compare(ours.get("CMS125", {}), fqm["results"], POPS)
    missing = sorted(ids - set(fqm["results"]))
    fqm_pps = fqm["patients"] / median(fqm_s)
    eng_pps = args.patients / median(eng_s)
    out = {
        "command": f"python -m benchmarks.fqm_peer --patients {args.patients} --sample {args.sample} "
        f"--repeat {args.repeat}",
        "machine": machine(),
        "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip(),
        "fqm_execution": json.loads((PEERS / "node_modules" / "fqm-execution" / "package.json").read_text())[
            "version"
        ],
        "measure_bundle": str(BUNDLE),
        "sample": args.sample,
        "exported_bundles": exported,
        "export_s": round(export_s, 2),
        "fqm_calc_s": median(fqm_s),
        "fqm_calc_runs_s": [round(x, 2) for x in fqm_s],
        "fqm_process_s": median(fqm_proc_s),
        "fqm_patients_per_s": round(fqm_pps, 1),
        "engine_lake_patients": args.patients,
        "engine_lake_s": median(eng_s),
        "engine_patients_per_s": round(eng_pps),
        "engine_sample_s": median(small_s),
        "engine_sample_patients_per_s": round(args.sample / median(small_s)),
        "ratio_engine_over_fqm_throughput": round(eng_pps / fqm_pps, 1),
        "ratio_engine_sample_over_fqm_throughput": round(args.sample / median(small_s) / fqm_pps, 1),
        "patients_missing_from_fqm": missing[:20],
        "agreement": agreement,
    }
    write_json("fqm_peer.json", out)
    return out


if __name__ == "__main__":
    print(json.dumps({k: v for k, v in main().items() if k != "machine"}, indent=1))
