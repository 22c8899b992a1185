"""Load measure and library YAML: parse with positions, validate with the models, check semantics, raise once."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from definitions.check import check_measure
from definitions.diagnostics import DefinitionError, Diagnostic
from definitions.model import Library, Measure
from definitions.resolved import ResolvedMeasure
from definitions.source import SourceMap, read_yaml

# Tags of the discriminated unions in definitions.model: pydantic puts them in error locations.
_UNION_TAGS = frozenset({
    "window", "ref", "attr", "value", "timing", "with", "without", "retrieve", "union", "events", "condition",
    "all", "any", "not", "exists", "count", "age", "gender", "pick", "covered_days", "unknown",
})  # fmt: skip


def _source_path(loc: Sequence[str | int], data: Any, smap: SourceMap) -> list[str | int]:
    """Map a pydantic error location onto the author's data: drop union tags, undo the one-group sugar."""
    if tuple(loc[:2]) == ("groups", 0) and isinstance(data, dict) and "groups" not in data:
        loc = loc[2:]
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        nxt = loc[i + 1] if i + 1 < len(loc) else None
        if (
            isinstance(part, str)
            and part in _UNION_TAGS
            and (not isinstance(node, dict) or part not in node or nxt == part)
        ):
            continue
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            out.append(part)
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and "[" not in part and "-" not in part:
            out.append(part)  # a missing field: reported at its parent's position
            node = None
    return out


def _validation_diagnostics(exc: ValidationError, data: Any, smap: SourceMap) -> list[Diagnostic]:
    found: list[Diagnostic] = []
    for error in exc.errors(include_url=False):
        path = _source_path(error["loc"], data, smap)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key (not part of the language here)"
        found.append(smap.diagnostic(path, message))
    # a union reports one error per branch: keep the most specific (deepest) per position
    best: dict[tuple[int, int], Diagnostic] = {}
    for d in found:
        key = (d.line, d.col)
        if key not in best or len(d.path) > len(best[key].path):
            best[key] = d
    return list(best.values())


def _validate(model: type[Measure] | type[Library], data: Any, smap: SourceMap) -> Measure | Library:
    if not isinstance(data, dict):
        raise DefinitionError([smap.diagnostic((), "expected a mapping at the top level")])
    if "libraries" in data:
        raise DefinitionError(
            [smap.diagnostic(("libraries",), "libraries are filled from include, not written")]
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise DefinitionError(_validation_diagnostics(exc, data, smap)) from None


def default_library_dirs() -> list[Path]:
    from measures import LIB_DIR

    return [LIB_DIR]


# An include names a library (its ``library:`` id), never a path: no separators, dots, NUL or upper case.
_LIBRARY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,99}$")


def _find_library(name: str, dirs: Iterable[Path]) -> Path | None:
    if not _LIBRARY_NAME.match(name):
        return None
    for directory in dirs:
        candidate = directory / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    return None


def load_library(path: Path) -> tuple[Library, SourceMap]:
    data, smap = read_yaml(path)
    lib = _validate(Library, data, smap)
    assert isinstance(lib, Library)
    return lib, smap


def load_measure(path: str | Path, library_dirs: Sequence[Path] | None = None) -> ResolvedMeasure:
    """A measure with its included libraries (transitively), validated and checked; DefinitionError otherwise."""
    path = Path(path)
    dirs = [path.parent / "lib", *(library_dirs or default_library_dirs())]
    data, smap = read_yaml(path)
    measure = _validate(Measure, data, smap)
    assert isinstance(measure, Measure)
    libraries: dict[str, Library] = {}
    lib_maps: dict[str, SourceMap] = {}
    problems: list[Diagnostic] = []
    pending = [(name, smap, ("include", i)) for i, name in enumerate(measure.include)]
    while pending:
        name, where, at = pending.pop(0)
        if name in libraries:
            continue
        if not _LIBRARY_NAME.match(name):
            problems.append(
                where.diagnostic(at, f"{name[:100]!r} is not a library name (lower-case letters, digits, _)")
            )
            continue
        lib_path = _find_library(name, dirs)
        if lib_path is None:
            problems.append(
                where.diagnostic(at, f"library {name!r} not found in {', '.join(map(str, dirs))}")
            )
            continue
        try:
            lib, lib_smap = load_library(lib_path)
        except DefinitionError as exc:
            problems.extend(exc.diagnostics)
            continue
        if lib.library != name:
            problems.append(
                lib_smap.diagnostic(("library",), f"file {lib_path.name} declares library {lib.library!r}")
            )
        libraries[name] = lib
        lib_maps[name] = lib_smap
        pending.extend((dep, lib_smap, ("include", i)) for i, dep in enumerate(lib.include))
    if problems:
        raise DefinitionError(problems)
    resolved = ResolvedMeasure(measure=measure, libraries=libraries, source=smap, library_sources=lib_maps)
    problems = check_measure(resolved)
    if problems:
        raise DefinitionError(problems)
    return resolved


def load_measures(
    paths: Iterable[str | Path], library_dirs: Sequence[Path] | None = None
) -> list[ResolvedMeasure]:
    """Several measures; every file's problems are collected before raising once."""
    out: list[ResolvedMeasure] = []
    problems: list[Diagnostic] = []
    for path in paths:
        try:
            out.append(load_measure(path, library_dirs))
        except DefinitionError as exc:
            problems.extend(exc.diagnostics)
    if problems:
        raise DefinitionError(problems)
    return out
