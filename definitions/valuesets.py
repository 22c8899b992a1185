"""Value sets: the project's YAML files and official FHIR ValueSet expansions (JSON), keyed by canonical URL.

An expansion whose ``total`` differs from the number of codes it lists is refused: some published
expansions are truncated at 1,000 codes, and matching against a truncated list is a silent wrong answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from definitions.diagnostics import DefinitionError, Diagnostic
from definitions.source import read_yaml


@dataclass(frozen=True)
class ValueSet:
    url: str
    name: str
    version: str | None
    codes: frozenset[tuple[str, str]]
    synthetic: bool = False
    origin: str = ""


def canonical_url(url: str) -> str:
    """A value-set reference without its ``|version`` suffix (versions are pinned by the expansion loaded)."""
    return url.split("|", 1)[0].strip()


@dataclass(frozen=True)
class ValueSetLibrary(Mapping[str, ValueSet]):
    """Value sets by canonical URL. Later sources override earlier ones (user expansions over shipped ones)."""

    by_url: Mapping[str, ValueSet] = field(default_factory=dict)

    def __getitem__(self, url: str) -> ValueSet:
        return self.by_url[canonical_url(url)]

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_url)

    def __len__(self) -> int:
        return len(self.by_url)

    def __contains__(self, url: object) -> bool:
        return isinstance(url, str) and canonical_url(url) in self.by_url

    def overlay(self, other: Iterable[ValueSet]) -> ValueSetLibrary:
        merged = dict(self.by_url)
        merged.update({vs.url: vs for vs in other})
        return ValueSetLibrary(merged)


def load_valueset_yaml(path: Path) -> list[ValueSet]:
    """The project's format: ``valuesets: [{url, name, codes: [[system, code, display], ...]}]``."""
    data, smap = read_yaml(path)
    problems: list[Diagnostic] = []
    out: list[ValueSet] = []
    synthetic = bool(data.get("synthetic", False)) if isinstance(data, dict) else False
    entries = data.get("valuesets") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise DefinitionError([smap.diagnostic(("valuesets",), "expected a list of value sets")])
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            problems.append(smap.diagnostic(("valuesets", i), "a value set needs a url"))
            continue
        codes: set[tuple[str, str]] = set()
        for j, code in enumerate(entry.get("codes") or []):
            if isinstance(code, list) and len(code) >= 2:
                codes.add((str(code[0]), str(code[1])))
            elif isinstance(code, dict) and "system" in code and "code" in code:
                codes.add((str(code["system"]), str(code["code"])))
            else:
                problems.append(
                    smap.diagnostic(("valuesets", i, "codes", j), "a code is [system, code, display]")
                )
        out.append(
            ValueSet(
                url=canonical_url(entry["url"]),
                name=str(entry.get("name", entry["url"])),
                version=entry.get("version"),
                codes=frozenset(codes),
                synthetic=synthetic,
                origin=str(path),
            )
        )
    if problems:
        raise DefinitionError(problems)
    return out


def _contains(items: Iterable[Any]) -> Iterator[tuple[str, str]]:
    for item in items:
        if isinstance(item, dict):
            if "system" in item and "code" in item:
                yield str(item["system"]), str(item["code"])
            yield from _contains(item.get("contains") or [])


def _from_resource(resource: Mapping[str, Any], origin: str) -> ValueSet:
    url = resource.get("url")
    if not isinstance(url, str):
        raise ValueError("ValueSet without url")
    expansion = resource.get("expansion")
    if not isinstance(expansion, dict):
        raise ValueError(f"ValueSet {url} has no expansion (only expanded value sets can be evaluated)")
    codes = list(_contains(expansion.get("contains") or []))
    total = expansion.get("total")
    if isinstance(total, int) and total != len(codes):
        raise ValueError(f"ValueSet {url} expansion is truncated: total {total}, {len(codes)} codes listed")
    return ValueSet(
        url=canonical_url(url),
        name=str(resource.get("name") or resource.get("title") or url),
        version=resource.get("version"),
        codes=frozenset(codes),
        origin=origin,
    )


def load_fhir_valuesets(path: Path) -> tuple[list[ValueSet], list[str]]:
    """Every expanded ValueSet in a JSON file (a ValueSet or a Bundle of them) or a folder searched recursively.

    Returns the value sets and the problems (refused expansions, unreadable files), each naming its file.
    Files that hold no ValueSet (test patients, measures) are skipped.
    """
    files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
    found: list[ValueSet] = []
    problems: list[str] = []
    for file in files:
        try:
            doc = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            problems.append(f"{file}: not readable JSON ({exc.__class__.__name__})")
            continue
        resources: list[Any] = []
        if isinstance(doc, dict) and doc.get("resourceType") == "ValueSet":
            resources = [doc]
        elif isinstance(doc, dict) and doc.get("resourceType") == "Bundle":
            resources = [
                e.get("resource") for e in doc.get("entry") or []
                if isinstance(e, dict) and isinstance(e.get("resource"), dict)
                and e["resource"].get("resourceType") == "ValueSet"
            ]  # fmt: skip
        for resource in resources:
            try:
                found.append(_from_resource(resource, str(file)))
            except ValueError as exc:
                problems.append(f"{file}: {exc}")
    return found, problems
