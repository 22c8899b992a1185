"""``measures test [MEASURE...] [--cases DIR]``: run test decks and show expected vs actual per patient.

Decks: the project's own YAML test patients (``tests/cases/<measure>/``, when run from a checkout) and, with
``--cases``, official eCQM test folders (``DIR/<MEASURE>/tests/*.json`` with their expected MeasureReports, or
``DIR`` itself for one measure). Official cases are evaluated with the measure bundle's own value sets.
Exits 1 when any case does not match, so it can gate a change to a definition.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from measures import LIBRARY_DIR, measure_files


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "test", help="run test decks: expected vs actual per patient and population"
    )
    parser.add_argument(
        "measures", nargs="*", help="measure ids (default: every library measure with a deck)"
    )
    parser.add_argument("--cases", type=Path, help="official test folders (e.g. ../shared/data/ecqm)")
    parser.add_argument("--valuesets", help="FHIR ValueSet expansions for the project's own YAML cases")
    parser.add_argument("--all", action="store_true", help="print every case, not only mismatches")
    parser.set_defaults(func=run)


def _decks(measure: str, cases_dir: Path | None) -> list[tuple[str, Path]]:
    """(kind, path) of every deck for a measure: official folders and the project's YAML cases."""
    found: list[tuple[str, Path]] = []
    if cases_dir is not None:
        for folder in (cases_dir / measure.upper(), cases_dir):
            if (folder / "measure-bundle.json").is_file() and (folder / "tests").is_dir():
                if folder == cases_dir and folder.name.upper() != measure.upper():
                    continue
                found.append(("official", folder))
                break
    own = LIBRARY_DIR.parent / "tests" / "cases" / measure.lower()
    if own.is_dir():
        found.append(("yaml", own))
    return found


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from definitions import DefinitionError, load_measure
    from engine import compile_measure
    from engine.library import load_valuesets
    from engine.testdeck import load_deck, official_valuesets, run_deck

    console = Console()
    wanted = {m.upper() for m in args.measures}
    files = [p for p in measure_files() if not wanted or p.stem.upper() in wanted]
    if wanted - {p.stem.upper() for p in files}:
        console.print(
            f"[red]unknown measure(s): {', '.join(sorted(wanted - {p.stem.upper() for p in files}))}"
        )
        return 2
    table = Table(title="test decks")
    for column in ("measure", "deck", "case", "result", "detail"):
        table.add_column(column)
    totals = {"passed": 0, "failed": 0}
    own_valuesets: Any = None
    for path in files:
        measure_id = path.stem.upper()
        try:
            resolved = load_measure(path)
        except DefinitionError as exc:
            console.print(str(exc))
            return 1
        for kind, deck in _decks(measure_id, args.cases):
            if kind == "official":
                valuesets, _problems = official_valuesets(deck)
            else:
                own_valuesets = own_valuesets or load_valuesets(args.valuesets)
                official = args.cases / measure_id if args.cases else None
                valuesets = (
                    official_valuesets(official)[0]
                    if official and (official / "measure-bundle.json").is_file()
                    else own_valuesets
                )
            try:
                plan = compile_measure(resolved, valuesets)
            except DefinitionError as exc:
                table.add_row(measure_id, kind, "-", "[yellow]not run[/]", str(exc).splitlines()[0])
                continue
            for result in run_deck(plan, load_deck(deck)):
                ok = result.ok
                totals["passed" if ok else "failed"] += 1
                if args.all or not ok:
                    detail = result.describe().split(": ", 1)[-1]
                    table.add_row(
                        measure_id, kind, result.case.id, "[green]pass[/]" if ok else "[red]FAIL[/]", detail
                    )
    if table.row_count:
        console.print(table)
    console.print(f"{totals['passed']} passed, {totals['failed']} failed")
    return 1 if totals["failed"] else 0
