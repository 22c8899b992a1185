"""``measures evaluate BUNDLE.json --measure ID``: individual MeasureReports for the patient of a FHIR Bundle.

The Bundle goes through the same flattener as ingestion and the same compiled plans as a batch run, so the
answer here is the answer the API and the batch give for that patient.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("evaluate", help="evaluate one FHIR Bundle: individual MeasureReport(s)")
    parser.add_argument("bundle", type=Path, help="a FHIR R4 Bundle JSON file (one patient)")
    parser.add_argument("--measure", action="append", help="measure id (repeatable; default: all)")
    parser.add_argument(
        "--period", help="START:END dates, e.g. 2025-01-01:2025-12-31 (default: each measure's)"
    )
    parser.add_argument("--valuesets", help="FHIR ValueSet expansions (file or folder) over the shipped ones")
    parser.add_argument("--format", choices=("json", "table"), default="json")
    parser.set_defaults(func=run)


def parse_period(text: str | None) -> tuple[date | None, date | None]:
    if not text:
        return None, None
    start, sep, end = text.partition(":")
    if not sep:
        raise ValueError(f"--period {text!r}: expected START:END")
    return date.fromisoformat(start), date.fromisoformat(end)


def run(args: argparse.Namespace) -> int:
    from datasets.fhir.bundle import flatten_bundle
    from datasets.source import FrameSource
    from engine import EvaluationConfig, evaluate
    from engine.library import load_library

    try:
        bundle = json.loads(args.bundle.read_text(encoding="utf-8"))
        start, end = parse_period(args.period)
    except (OSError, ValueError) as exc:
        print(f"measures evaluate: {exc}", file=sys.stderr)
        return 2
    flat = flatten_bundle(bundle, source=args.bundle.name)
    if flat.rejected.height:
        for row in flat.rejected.iter_rows(named=True):
            print(f"rejected: {row}", file=sys.stderr)
    patients = flat.tables["patient"]["patient_id"].to_list() if "patient" in flat.tables else []
    if len(patients) != 1:
        print(f"measures evaluate: the Bundle must hold one Patient (found {len(patients)})", file=sys.stderr)
        return 2
    plans = load_library(args.measure, args.valuesets)
    config = EvaluationConfig(period_start=start, period_end=end, streaming=False)
    result = evaluate(plans, FrameSource(flat.tables), config)
    reports = result.measure_reports("individual", patient_id=patients[0])
    if args.format == "table":
        for report in reports:
            pops = {
                p["code"]["coding"][0]["code"]: p["count"]
                for g in report.get("group", [])
                for p in g.get("population", [])
            }
            print(report["measure"], pops)
        return 0
    out = (
        reports[0]
        if len(reports) == 1
        else {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": r} for r in reports],
        }
    )
    print(json.dumps(out, indent=1, sort_keys=True, default=str))
    return 0
