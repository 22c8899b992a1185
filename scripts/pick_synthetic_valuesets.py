"""Pick a few real codes for value sets the library references but the synthetic files lack.

Reads the official eCQM content (``--ecqm``, default /work/shared/data/ecqm: a folder per measure with a
``measure-bundle.json``) in place and prints, per missing value set, a YAML entry in the format of
``measures/valuesets/synthetic/*.yaml`` with at most ``--max`` codes that are members of the official
expansion (at most two per code system, systems in a fixed preference order, codes in expansion order).
Without ``--append`` it only prints; with it, each entry is appended to the area file it belongs to
(``AREAS``: by measure, encounter value sets to encounters.yaml), under a comment naming the measure. Run it
again after a measure file is added: only value sets still missing are picked. Codes that another synthetic
value set already holds are passed over while the expansion has others, so that a new measure's world does not
feed another measure's value sets (a depression code picked for "Mental Health Diagnoses" would). Read the
result: a picked code that is a member of the expansion can still be an unusual example of the concept (add
it to ``TYPICAL``).

    .venv/bin/python scripts/pick_synthetic_valuesets.py [--ecqm DIR] [--max 3] [--all] [--append]
"""

from __future__ import annotations

import argparse
import glob
import json
import re
from pathlib import Path

import measures
from datasets.synthetic_codes import load_valuesets

HEADER = """# measures-engine synthetic value sets: a few real codes per value set, hand-picked by the project for its
# synthetic world. NOT official VSAC expansions; bring your licensed expansions with --valuesets.
# Area: {area}.
synthetic: true
valuesets:
"""
# Area file per measure (first referencing measure wins); value sets named like encounters go to encounters.
AREAS = {
    "cms117": ("immunization", "childhood immunizations and their exclusions"),
    "cms146": ("respiratory", "pharyngitis, its tests, antibiotics and competing conditions"),
    "cms159": ("behavioral", "tobacco and depression"),
    "cms128": ("behavioral", "tobacco and depression"),
    "cms2": ("behavioral", "tobacco and depression"),
    "cms22": ("hypertension", "hypertension and blood pressure"),
    "cms165": ("hypertension", "hypertension and blood pressure"),
    "cms871": ("diabetes", "diabetes and HbA1c"),
    "cms122": ("diabetes", "diabetes and HbA1c"),
    "cms986": ("nutrition", "inpatient malnutrition screening, assessment and care"),
    "cms108": ("vte", "inpatient VTE prophylaxis, its exclusions and ICU locations"),
}
ENCOUNTER = re.compile(r"\b(Visit|Encounter|Consultation|Exam)\b")
VS_URL = re.compile(r"http://cts\.nlm\.nih\.gov/fhir/ValueSet/[0-9.]+")
HSLOC = "https://www.cdc.gov/nhsn/cdaportal/terminology/codesystem/hsloc.html"
PREFERRED = (
    "http://snomed.info/sct",
    "http://www.ama-assn.org/go/cpt",
    "http://loinc.org",
    "http://hl7.org/fhir/sid/icd-10-cm",
    "http://www.nlm.nih.gov/research/umls/rxnorm",
    "http://hl7.org/fhir/sid/cvx",
    "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
    "http://www.cms.gov/Medicare/Coding/ICD10",  # ICD-10-PCS
    HSLOC,  # NHSN location types
)


def referenced() -> dict[str, set[str]]:
    """Every value-set URL written in a measure or library file (``valuesets:`` maps and inline URLs)."""
    refs: dict[str, set[str]] = {}
    for path in [*measures.measure_files(), *measures.library_files()]:
        for url in VS_URL.findall(path.read_text()):
            refs.setdefault(url, set()).add(path.stem)
    return refs


def official(ecqm: Path) -> dict[str, dict]:
    """ValueSet resources by URL across every measure bundle (the first one with an expansion wins)."""
    found: dict[str, dict] = {}
    for bundle in sorted(glob.glob(str(ecqm / "*" / "measure-bundle.json"))):
        for entry in json.loads(Path(bundle).read_text()).get("entry", []):
            res = entry.get("resource", {})
            if res.get("resourceType") != "ValueSet":
                continue
            url = res.get("url", "")
            if url not in found or not found[url].get("expansion", {}).get("contains"):
                found[url] = res
    return found


# Codes the synthetic world should prefer where a value set contains them (common, typical of the concept).
TYPICAL = {
    ("http://www.ama-assn.org/go/cpt", "99213"),  # office visit, established patient
    ("http://www.ama-assn.org/go/cpt", "99214"),
    ("http://www.ama-assn.org/go/cpt", "99203"),  # office visit, new patient
    ("http://snomed.info/sct", "59621000"),  # essential hypertension
    ("http://hl7.org/fhir/sid/icd-10-cm", "I10"),
    ("http://snomed.info/sct", "363746003"),  # acute pharyngitis
    ("http://hl7.org/fhir/sid/icd-10-cm", "J02.9"),
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "308191"),  # amoxicillin 500 MG oral capsule
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "308182"),  # amoxicillin 250 MG oral capsule
    ("http://snomed.info/sct", "370143000"),  # major depressive disorder
    ("http://hl7.org/fhir/sid/icd-10-cm", "F32.9"),
    ("http://hl7.org/fhir/sid/icd-10-cm", "F32.1"),
    ("http://hl7.org/fhir/sid/cvx", "20"),  # DTaP
    ("http://hl7.org/fhir/sid/cvx", "10"),  # IPV
    ("http://hl7.org/fhir/sid/cvx", "03"),  # MMR
    ("http://hl7.org/fhir/sid/cvx", "08"),  # hep B, pediatric
    ("http://hl7.org/fhir/sid/cvx", "21"),  # varicella
    ("http://hl7.org/fhir/sid/cvx", "133"),  # PCV13
    ("http://hl7.org/fhir/sid/cvx", "83"),  # hep A, pediatric 2 dose
    ("http://hl7.org/fhir/sid/cvx", "116"),  # rotavirus pentavalent
    ("http://hl7.org/fhir/sid/cvx", "119"),  # rotavirus monovalent
    ("http://hl7.org/fhir/sid/cvx", "140"),  # influenza, preservative free
    ("http://hl7.org/fhir/sid/cvx", "48"),  # Hib PRP-T
    ("http://hl7.org/fhir/sid/cvx", "49"),  # Hib PRP-OMP
    # CMS108 VTE prophylaxis: usual prophylactic doses, common admitting diagnoses and surgeries
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "854235"),  # enoxaparin 40 MG (0.4 ML 100 MG/ML)
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "854228"),  # enoxaparin 30 MG (0.3 ML 100 MG/ML)
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "1659263"),  # heparin 5000 UNT (1 ML) injection
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "1798389"),  # heparin 5000 UNT prefilled syringe
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "861360"),  # fondaparinux 2.5 MG
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "855332"),  # warfarin 5 MG
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "855312"),  # warfarin 2.5 MG
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "1114198"),  # rivaroxaban 10 MG
    ("http://snomed.info/sct", "47625008"),  # intravenous route
    ("http://loinc.org", "6301-6"),  # INR in platelet poor plasma
    ("http://loinc.org", "34714-6"),  # INR in blood
    ("http://snomed.info/sct", "723505004"),  # low risk
    ("http://snomed.info/sct", "62482003"),  # low
    ("http://snomed.info/sct", "183932001"),  # procedure contraindicated
    ("http://snomed.info/sct", "183966005"),  # drug treatment not indicated
    ("http://snomed.info/sct", "182895007"),  # drug declined by patient
    ("http://snomed.info/sct", "105480006"),  # procedure declined by patient
    ("http://snomed.info/sct", "133918004"),  # comfort measures
    ("http://snomed.info/sct", "182964004"),  # terminal care
    (HSLOC, "1027-2"),  # medical critical care
    (HSLOC, "1029-8"),  # medical-surgical critical care
    ("http://snomed.info/sct", "309904001"),  # intensive care unit
    ("http://snomed.info/sct", "49436004"),  # atrial fibrillation
    ("http://hl7.org/fhir/sid/icd-10-cm", "I48.91"),
    ("http://snomed.info/sct", "5370000"),  # atrial flutter
    ("http://snomed.info/sct", "422504002"),  # ischemic stroke
    ("http://hl7.org/fhir/sid/icd-10-cm", "I63.9"),
    ("http://snomed.info/sct", "274100004"),  # cerebral hemorrhage
    ("http://hl7.org/fhir/sid/icd-10-cm", "I61.9"),
    ("http://snomed.info/sct", "58214004"),  # schizophrenia
    ("http://hl7.org/fhir/sid/icd-10-cm", "F20.9"),
    ("http://snomed.info/sct", "128053003"),  # deep venous thrombosis
    ("http://snomed.info/sct", "59282003"),  # pulmonary embolism
    ("http://hl7.org/fhir/sid/icd-10-cm", "I82.409"),
    ("http://hl7.org/fhir/sid/icd-10-cm", "I26.99"),
    ("http://snomed.info/sct", "48782003"),  # delivery normal
    ("http://hl7.org/fhir/sid/icd-10-cm", "O80"),
    ("http://snomed.info/sct", "200284000"),  # obstetric pulmonary embolism
    ("http://hl7.org/fhir/sid/icd-10-cm", "O22.30"),
    ("http://snomed.info/sct", "50697003"),  # administration of general anesthetic
    ("http://snomed.info/sct", "18946005"),  # epidural anesthesia
    ("http://snomed.info/sct", "52734007"),  # total replacement of hip
    ("http://snomed.info/sct", "265158005"),  # primary cemented total hip replacement
    ("http://snomed.info/sct", "609588000"),  # total knee replacement
    ("http://snomed.info/sct", "179344006"),  # primary cemented total knee replacement
    ("http://snomed.info/sct", "47458005"),  # repair of hip joint
    ("http://snomed.info/sct", "84604002"),  # sigmoid colectomy
    ("http://snomed.info/sct", "45993005"),  # cholecystectomy with exploration of common duct
    ("http://snomed.info/sct", "116028008"),  # salpingo-oophorectomy
    ("http://snomed.info/sct", "25353009"),  # craniotomy
    ("http://snomed.info/sct", "175905003"),  # total nephrectomy
    ("http://snomed.info/sct", "116033007"),  # radical nephrectomy
}


def pick(
    contains: list[dict], limit: int, taken: frozenset[tuple[str, str]] = frozenset()
) -> list[tuple[str, str, str]]:
    """Typical codes (``TYPICAL``) when the expansion has any, else two per code system, round-robin; codes in
    ``taken`` (held by other synthetic value sets) only when the expansion has nothing else."""
    rank = {s: i for i, s in enumerate(PREFERRED)}
    out: list[tuple[str, str, str]] = []
    contains = [c for c in contains if (c["system"], c["code"]) not in taken] or contains
    for c in contains:
        key = (c["system"], c["code"])
        if len(out) < limit and key in TYPICAL:
            out.append((c["system"], c["code"], c.get("display", "")))
    if out:
        return out
    by_system: dict[str, list[dict]] = {}
    for c in contains:
        by_system.setdefault(c["system"], []).append(c)
    systems = sorted(by_system, key=lambda s: (rank.get(s, len(rank)), s))
    for round_ in range(2):
        for s in systems:
            if len(out) < limit and len(by_system[s]) > round_:
                c = by_system[s][round_]
                out.append((s, c["code"], c.get("display", "")))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ecqm", type=Path, default=Path("/work/shared/data/ecqm"))
    ap.add_argument("--max", type=int, default=3)
    ap.add_argument("--all", action="store_true", help="also value sets the synthetic files already have")
    ap.add_argument("--append", action="store_true", help="append the picks to the area files")
    args = ap.parse_args()
    blocks: dict[tuple[str, str], list[str]] = {}
    existing = load_valuesets(measures.SYNTHETIC_VALUESETS_DIR).values()
    have = {v.url for v in existing}
    held = [(v.url, (s, c)) for v in existing for s, c, _ in v.codes]
    vs = official(args.ecqm)
    for url, users in sorted(referenced().items(), key=lambda x: (sorted(x[1]), x[0])):
        if url in have and not args.all:
            continue
        res = vs.get(url)
        contains = (res or {}).get("expansion", {}).get("contains", [])
        title = (res or {}).get("title") or (res or {}).get("name") or "?"
        lines = [f"  # used by {', '.join(sorted(users))}"]
        if not contains:
            print("\n".join(lines))
            print(f"  # NO OFFICIAL EXPANSION: {url} ({title}): add it by hand from the CQL, or leave it out")
            continue
        lines.append(f"  - url: {url}\n    name: {json.dumps(title)}\n    codes:")
        taken = frozenset(code for other, code in held if other != url)
        picked = pick(contains, args.max, taken)
        lines += [f"      - [{s}, {json.dumps(c)}, {json.dumps(d)}]" for s, c, d in picked]
        print("\n".join(lines))
        first = sorted(users)[0]
        area = ("encounters", "qualifying encounters") if ENCOUNTER.search(title) else AREAS.get(first)
        if area is None:
            area = (first, f"value sets of {first.upper()}")
        block = blocks.setdefault(area, [])
        heading = f"  # {first.upper()}: codes picked from the official expansions (measure-bundle.json)"
        if heading not in block:
            block.append(heading)
        block.extend(lines[1:])
    if args.append:
        for (stem, label), lines in sorted(blocks.items()):
            path = measures.SYNTHETIC_VALUESETS_DIR / f"{stem}.yaml"
            text = path.read_text() if path.exists() else HEADER.format(area=label)
            path.write_text(text.rstrip("\n") + "\n" + "\n".join(lines) + "\n")
            print(f"appended {len(lines)} lines to {path}")


if __name__ == "__main__":
    main()
