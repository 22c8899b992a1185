"""``measures validate FILE...``: check definitions and report every problem as file:line:col."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from definitions import DefinitionError, load_measures


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("validate", help="check measure definitions (all errors, with positions)")
    parser.add_argument("files", nargs="*", type=Path, help="measure YAML files (default: the library)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from measures import measure_files

    files = args.files or measure_files()
    try:
        loaded = load_measures(files)
    except DefinitionError as exc:
        for diagnostic in exc.diagnostics:
            print(diagnostic, file=sys.stderr)
        print(f"{len(exc.diagnostics)} problem(s)", file=sys.stderr)
        return 1
    for measure in loaded:
        print(
            f"ok  {measure.id} v{measure.measure.version}  ({measure.measure.implements.library} "
            f"{measure.measure.implements.version})"
        )
    return 0
