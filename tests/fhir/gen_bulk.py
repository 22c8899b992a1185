"""Write a large Bulk Data export for throughput measurement: the official test resources, copied N times
with fresh patient and resource ids (``python -m tests.fhir.gen_bulk OUT N``)."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from datasets.fhir.bundle import bundle_resources

ECQM = Path(__file__).resolve().parents[2] / "../shared/data/ecqm"


def main(out: Path, copies: int) -> None:
    resources = [
        r
        for f in sorted(ECQM.glob("*/tests/*.json"))
        for r in bundle_resources(json.loads(f.read_bytes()), f.stem)
        if r["resourceType"] != "MeasureReport"
    ]
    templates: dict[str, list[str]] = defaultdict(list)
    for r in resources:
        r.pop("_source", None)
        templates[r["resourceType"]].append(json.dumps(r, separators=(",", ":")))
    out.mkdir(parents=True, exist_ok=True)
    handles = {t: (out / f"{t}.ndjson").open("w") for t in templates}
    for i in range(copies):
        suffix = f"-c{i}"
        for rtype, lines in templates.items():
            # Ids and references get the copy's suffix: every copy is a new set of patients.
            text = (
                "\n".join(lines)
                .replace('","id":"', '","id":"' + f"c{i}-")
                .replace('"reference":"', '"reference":"' + "\u0000")
            )
            text = _suffix_refs(text, suffix)
            handles[rtype].write(text + "\n")
    for h in handles.values():
        h.close()


def _suffix_refs(text: str, suffix: str) -> str:
    parts = text.split("\u0000")
    out = [parts[0]]
    for part in parts[1:]:
        ref, rest = part.split('"', 1)
        if "/" in ref and not ref.startswith("#"):
            rtype, rid = ref.rsplit("/", 1)
            ref = f"{rtype}/{suffix[1:]}-{rid}"
        out.append(ref + '"' + rest)
    return "".join(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
